"""Holds the bundled `f1` evaluate metric; a package only so that setuptools ships it."""

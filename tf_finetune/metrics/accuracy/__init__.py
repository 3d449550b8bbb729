"""Holds the bundled `accuracy` evaluate metric; a package only so that setuptools ships it."""

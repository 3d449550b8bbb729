"""Holds the bundled `squad` evaluate metric; a package only so that setuptools ships it."""

"""Holds the bundled `matthews_correlation` evaluate metric; a package only so that setuptools ships it."""

"""Holds the bundled `pearsonr` evaluate metric; a package only so that setuptools ships it."""

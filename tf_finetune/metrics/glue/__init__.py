"""Holds the bundled `glue` evaluate metric; a package only so that setuptools ships it."""

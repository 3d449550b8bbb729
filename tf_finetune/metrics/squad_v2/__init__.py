"""Holds the bundled `squad_v2` evaluate metric; a package only so that setuptools ships it."""

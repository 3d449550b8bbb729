"""Holds the bundled `spearmanr` evaluate metric; a package only so that setuptools ships it."""

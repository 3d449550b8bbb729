"""Holds the bundled `seqeval` evaluate metric; a package only so that setuptools ships it."""

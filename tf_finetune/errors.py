"""Errors that the command line reports as one line, without a traceback."""


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what and how."""

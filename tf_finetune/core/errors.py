"""Errors that the command line reports as one line, without a traceback."""
import difflib
import signal
from typing import Iterable

SIGNAL_EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal's number, as shells report them


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what and how."""


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """"did you mean 'x'? " for the known name closest to `name`, or "" when none is close: the hint an error about an
    unknown name gives."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return f"did you mean '{close[0]}'? " if close else ""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after a checkpoint was written."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} after writing {checkpoint}; run the same command "
                         "again to resume from there.")
        self.exit_code = SIGNAL_EXIT_CODES[signum]

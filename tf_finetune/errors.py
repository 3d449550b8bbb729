"""Errors that the command line reports as one line, without a traceback."""
import signal

SIGNAL_EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + the signal's number, as shells report them


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what and how."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after a checkpoint was written."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} after writing {checkpoint}; run the same command "
                         "again to resume from there.")
        self.exit_code = SIGNAL_EXIT_CODES[signum]

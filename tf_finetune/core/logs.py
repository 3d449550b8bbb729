"""What a command prints: the package's log level, a quiet TensorFlow start-up, and progress fitted to the output.

At `info` (the default) a run prints the package's own messages and its progress; the libraries' known harmless
notices (TensorFlow's C++ start-up lines and CUDA probes on GPU-less machines, transformers' TensorFlow deprecation
notice and its weight-loading notices, which tf-finetune says in one line of its own) appear only at `debug`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator, Optional, Sequence

LOG_LEVELS = ("debug", "info", "warning", "error")
PACKAGE_LOGGER = "tf_finetune"

# Lines TensorFlow's C++ runtime writes to stderr while it is imported, before its own log level applies
# (TF_CPP_MIN_LOG_LEVEL only takes effect once absl's logging is initialised), and the CUDA probes of a GPU-less
# machine.
_NATIVE_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|\] oneDNN custom operations are on"
    r"|\] Could not find cuda drivers on your machine"
    r"|\] failed call to cuInit"
    r"|\] Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|\] TF-TRT Warning"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|rebuild TensorFlow with the appropriate compiler flags")


def log_level_from_argv(argv: Optional[Sequence[str]]) -> str:
    """The `--log_level` among the command's flags (`info` when absent or not one of LOG_LEVELS)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        value = args[i + 1] if arg == "--log_level" and i + 1 < len(args) else (
            arg.split("=", 1)[1] if arg.startswith("--log_level=") else None)
        if value in LOG_LEVELS:
            return value
    return "info"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a message comes (a notebook or a test may replace it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_LIBRARY_LOGGERS = ("tensorflow", "absl")


def set_log_level(level: str) -> None:
    """The package's messages at `level` and above; the libraries' (transformers, TensorFlow's Python side) only at
    debug, else only their errors. A run's --log_level from a config file or a notebook's TrainConfig lands here too."""
    import transformers

    debug = level == "debug"
    logging.getLogger(PACKAGE_LOGGER).setLevel(level.upper())
    transformers.logging.set_verbosity(logging.DEBUG if debug else logging.ERROR)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.ERROR)


@contextlib.contextmanager
def command_logging(level: str = "info") -> Iterator[None]:
    """A command's logging: the package's messages at `level` and above on stderr (and only there: a library that
    logs through the root logger makes Python give it a handler), the libraries quiet unless `level` is debug. The
    package and library loggers are put back as they were afterwards (a command may run inside a notebook or test).

    Sets TensorFlow's C++ log level and tqdm's defaults too when TensorFlow / tqdm are not imported yet (commands
    start here): progress bars appear only for work that lasts over two seconds, and off a terminal they are redrawn
    at most every 10 seconds, so a log file gets a few lines rather than one per update.
    """
    debug = level == "debug"
    if "tqdm" not in sys.modules:
        os.environ.setdefault("TQDM_DELAY", "2")
        if not sys.stderr.isatty():
            os.environ.setdefault("TQDM_MININTERVAL", "10")
    import transformers

    package = logging.getLogger(PACKAGE_LOGGER)
    libraries = [logging.getLogger(name) for name in _LIBRARY_LOGGERS]
    saved = (package.level, package.propagate, [logger.level for logger in libraries],
             transformers.logging.get_verbosity())
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    package.propagate = False
    if "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if debug else "3"
    set_log_level(level)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.level, package.propagate = saved[0], saved[1]
        for logger, logger_level in zip(libraries, saved[2]):
            logger.setLevel(logger_level)
        transformers.logging.set_verbosity(saved[3])


@contextlib.contextmanager
def native_noise_filtered(level: str = "info") -> Iterator[None]:
    """Capture what native code writes to stderr (file descriptor 2) inside the block and write it back without the
    known start-up noise (_NATIVE_NOISE); at debug, write it back whole."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = lines if level == "debug" else [line for line in lines if not _NATIVE_NOISE.search(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def import_tensorflow(level: str = "info") -> None:
    """Import TensorFlow (and tf-keras, which transformers' TF models use) without its start-up noise."""
    if "tensorflow" in sys.modules and "tf_keras" in sys.modules:
        return
    with native_noise_filtered(level):
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401

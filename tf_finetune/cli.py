"""Command-line plumbing: flags generated from TrainConfig, `--config FILE`, one-line errors."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import types
from typing import Callable, Optional, Sequence

from tf_finetune.config import FIELD_FACTS, TrainConfig, load_config_file
from tf_finetune.core.errors import TrainingInterrupted, UserError
from tf_finetune.core.logs import command_logging, import_tensorflow, log_level_from_argv, set_log_level


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with one flag per TrainConfig field, plus --config and --list_tasks.

    The `--task` help names the registered tasks.
    """
    from transformers import HfArgumentParser

    from tf_finetune.tasks import list_tasks

    class ConfigParser(HfArgumentParser):
        """HfArgumentParser that keeps the fields' facts (FIELD_FACTS) out of argparse."""

        @staticmethod
        def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
            plain = copy.copy(field)
            plain.metadata = types.MappingProxyType({key: value for key, value in field.metadata.items()
                                                     if key not in FIELD_FACTS})
            HfArgumentParser._parse_dataclass_field(parser, plain)

        def error(self, message: str) -> None:
            """A bad flag (or config-file value) is one line, like every other bad input, not the usage text."""
            raise UserError(f"{message}; see --help.")

    parser = ConfigParser(TrainConfig, prog=prog, description=description)
    task_action = next(action for action in parser._actions if action.dest == "task")
    task_action.help = f"Task name: {', '.join(list_tasks())} (default: %(default)s). --list_tasks describes each."
    parser.add_argument("--config", help="YAML or JSON file with option values; flags given as well override it.")
    parser.add_argument("--list_tasks", action="store_true", help="Describe the registered tasks and exit.")
    return parser


def parse_config(argv: Optional[Sequence[str]], prog: str, description: str) -> Optional[TrainConfig]:
    """Parse flags (and an optional config file) into a validated TrainConfig; None after --list_tasks."""
    parser = build_parser(prog, description)
    args = list(sys.argv[1:] if argv is None else argv)
    config_path = _value_of("--config", args)
    if config_path:
        parser.set_defaults(**load_config_file(config_path))
    namespace = parser.parse_args(args)
    if namespace.list_tasks:
        from tf_finetune.tasks import describe_tasks

        print(describe_tasks())
        return None
    values = {k: v for k, v in vars(namespace).items() if k not in ("config", "list_tasks")}
    config = TrainConfig(**values)
    config.validate()
    set_log_level(config.log_level)  # also when it comes from --config (the flag was read before TensorFlow loaded)
    return config


def _value_of(flag: str, args: Sequence[str]) -> Optional[str]:
    """The value given to `flag` in args (`--flag v` or `--flag=v`), if any."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def run_cli(main: Callable[[], int], argv: Optional[Sequence[str]] = None, tensorflow: bool = True) -> int:
    """Run a command: logging at the level of its `--log_level` flag (see tf_finetune.core.logs), TensorFlow imported
    quietly (`tensorflow` false: a command that needs none); UserErrors become one line on stderr and exit code 2;
    SIGTERM / SIGINT exit 143 / 130."""
    level = log_level_from_argv(argv)
    with command_logging(level):
        return _run(main, level if tensorflow else None)


def _run(main: Callable[[], int], tensorflow_level: Optional[str]) -> int:
    try:
        if tensorflow_level:
            import_tensorflow(tensorflow_level)
        return main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as interrupted:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; run the same command again to resume.", file=sys.stderr)
        return 130

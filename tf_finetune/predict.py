"""`python -m tf_finetune.predict`: answer inputs with a saved model, the way its task does (fill masks, continue or
classify texts, ...).

The task is the one the model was trained for (its run_config.json), else the one its saved architecture suggests,
or --task (a Hub pipeline tag, or chat); each task adds its own flags, which `--task TAG --help` lists (tasks' flags
never meet: two tasks may both have a --max_new_tokens).

Examples:
    python -m tf_finetune.predict --model out "The Milky Way is a [MASK] galaxy."
    python -m tf_finetune.predict --task text-generation --model gpt2-out --max_new_tokens 30 "Once upon a time"
    python -m tf_finetune.predict --task text-classification --model sst2-out --file reviews.txt
    python -m tf_finetune.predict --task chat --model chat-out --system "Answer briefly." "Is this review positive?"
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tf_finetune.cli import run_cli
from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json
from tf_finetune.core.layout import RUN_CONFIG_FILE
from tf_finetune.core.logs import LOG_LEVELS
from tf_finetune.tasks import get_task, list_tasks, pipeline_tags, task_for_architectures, task_for_pipeline
from tf_finetune.tasks.base import Task


def build_parser(task: Optional[Task] = None) -> argparse.ArgumentParser:
    """The command's flags: the common ones, then those of the task that predicts (none when it is not known)."""
    parser = argparse.ArgumentParser(prog="python -m tf_finetune.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="Input texts (fill-mask: each with a mask token).")
    parser.add_argument("--model", required=True, help="Model directory written by tf_finetune.train "
                        "(or any save_pretrained checkpoint with its preprocessor).")
    parser.add_argument("--task", choices=pipeline_tags(),
                        help="What to predict (default: the task the model was trained for, from its "
                        "run_config.json, else from the architecture in its config.json); with --help: its flags.")
    parser.add_argument("--file", help="Inputs, one per line (blank lines skipped), after any TEXTs.")
    parser.add_argument("--batch_size", type=int, default=32, help="Inputs per batch (batches are sorted by length "
                        "where the task computes them itself).")
    parser.add_argument("--log_level", choices=LOG_LEVELS, default="info", help="Messages shown besides the "
                        "predictions (debug adds the libraries' own).")
    if task is not None:
        task.add_predict_arguments(parser.add_argument_group(f"{task.predict_name or task.pipeline_tag} flags"))
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The flags, with those of the task that predicts: --task's, else the model's (see predicting_task)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--model")
    first.add_argument("--task")
    known, _ = first.parse_known_args(argv)
    tag = known.task if known.task in pipeline_tags() else None  # another value fails in the full parser
    return build_parser(predicting_task(tag, known.model)).parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, predict, print one block of results per input, and return the exit code."""
    def run() -> int:
        args = parse_args(argv)
        for line in predict(args):
            print(line)
        return 0

    return run_cli(run, argv)


def predict(args: argparse.Namespace) -> list[str]:
    """The printed lines for the parsed flags (see parse_args); bad input raises UserError before the model is
    loaded."""
    from tf_finetune.models.loading import load_model, load_model_config

    if not os.path.isdir(args.model):
        raise UserError(f"model directory {args.model} does not exist; pass --model the output_dir of a "
                        "tf_finetune.train run.")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be positive, got {args.batch_size}.")
    config = load_model_config(args.model)
    task = predicting_task(args.task, args.model)
    if task is None:
        found = ", ".join(config.architectures or []) or "none"
        raise UserError(f"cannot tell the task of {args.model} from its architectures ({found}); pass --task "
                        f"{' or '.join(pipeline_tags())}.")
    preprocessor = task.load_preprocessor(args.model)
    inputs = task.predict_inputs(args, preprocessor)
    model = load_model(task.auto_model_class, args.model, config)
    return task.predict_lines(model, preprocessor, inputs, args)


def predicting_task(tag: Optional[str], model_dir: Optional[str]) -> Optional[Task]:
    """The task that predicts: the one of --task's tag, else the one the model in model_dir was trained for (its
    run_config.json), else the one its saved architecture suggests; None when none is known."""
    from tf_finetune.models.loading import load_model_config

    if tag:
        return task_for_pipeline(tag)
    if not model_dir or not os.path.isfile(os.path.join(model_dir, "config.json")):
        return None
    return _task_of_run(model_dir) or task_for_architectures(load_model_config(model_dir).architectures)


def _task_of_run(model_dir: str) -> Optional[Task]:
    """The task a tf_finetune.train run in model_dir trained (from its run_config.json), if known."""
    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    name = read_json(path).get("task") if os.path.isfile(path) else None
    return get_task(name) if name in list_tasks() else None


if __name__ == "__main__":
    sys.exit(main())

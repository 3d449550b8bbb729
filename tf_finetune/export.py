"""`python -m tf_finetune.export RUN_DIR --format pytorch|savedmodel|gguf --output_dir DIR`: a saved model in a form
that outlives transformers' TensorFlow classes.

- pytorch: `model.safetensors` with PyTorch parameter names, config.json and the tokenizer, loadable by
  `transformers.AutoModelFor...` with PyTorch alone (transformers v4 and v5).
- savedmodel: a TF SavedModel whose `serving_default` signature takes token ids and returns the logits.
- gguf: a causal LM (Llama, Qwen2, Qwen3) as one GGUF file for llama.cpp, tokenizer and chat template included,
  weights as --outtype f16 or q8_0.
- onnx: not offered; the error says why and what to use instead.

Example:
    python -m tf_finetune.export out/sst2 --format pytorch --output_dir out/sst2-pytorch
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tf_finetune.cli import run_cli
from tf_finetune.models.gguf_export import OUTTYPES
from tf_finetune.outputs.export import FORMATS, export


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(prog="python -m tf_finetune.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="A run's output directory (or any save_pretrained folder).")
    parser.add_argument("--format", required=True, help=f"One of {', '.join(FORMATS)}.")
    parser.add_argument("--output_dir", required=True, help="Where the export is written (a new or empty folder).")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Replace a non-empty --output_dir.")
    parser.add_argument("--outtype", default="f16", help=f"GGUF weights (llama.cpp's names): {', '.join(OUTTYPES)}.")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, export, and return the exit code."""
    def run() -> int:
        args = build_parser().parse_args(argv)
        export(args.run_dir, args.format, args.output_dir, overwrite=args.overwrite_output_dir, outtype=args.outtype)
        print(f"Exported {args.run_dir} as {args.format} to {args.output_dir}.")
        return 0

    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())

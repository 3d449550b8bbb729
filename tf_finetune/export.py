"""`python -m tf_finetune.export RUN_DIR --format pytorch|savedmodel --output_dir DIR`: a saved model in a form that
outlives transformers' TensorFlow classes.

- pytorch: `model.safetensors` with PyTorch parameter names, config.json and the tokenizer, loadable by
  `transformers.AutoModelFor...` with PyTorch alone (transformers v4 and v5).
- savedmodel: a TF SavedModel whose `serving_default` signature takes token ids and returns the logits.
- onnx: not offered; the error says why and what to use instead.

Example:
    python -m tf_finetune.export out/sst2 --format pytorch --output_dir out/sst2-pytorch
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Optional, Sequence

from tf_finetune.cli import run_cli
from tf_finetune.errors import UserError
from tf_finetune.outputs import read_json, write_dir_atomic, write_text

logger = logging.getLogger(__name__)

PYTORCH_DIR = "pytorch"  # a run's PyTorch copy (--hub_export pytorch): a folder of its own, because transformers'
# TF from_pretrained prefers a model.safetensors beside tf_model.h5 and cannot load PyTorch-format ones (4.57)
FORMATS = ("pytorch", "savedmodel", "onnx")
ONNX_UNSUPPORTED = ("--format onnx is not offered: tf2onnx 1.17, the TensorFlow-to-ONNX converter, leaves TensorFlow "
                    "2.21's GELU as an Erfc op that ONNX Runtime rejects, so the BERT graphs it writes do not load; "
                    "export with --format pytorch and convert that with PyTorch's torch.onnx.export.")


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    parser = argparse.ArgumentParser(prog="python -m tf_finetune.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="A run's output directory (or any save_pretrained folder).")
    parser.add_argument("--format", required=True, help=f"One of {', '.join(FORMATS)}.")
    parser.add_argument("--output_dir", required=True, help="Where the export is written (a new or empty folder).")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="Replace a non-empty --output_dir.")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, export, and return the exit code."""
    def run() -> int:
        args = build_parser().parse_args(argv)
        export(args.run_dir, args.format, args.output_dir, overwrite=args.overwrite_output_dir)
        print(f"Exported {args.run_dir} as {args.format} to {args.output_dir}.")
        return 0

    return run_cli(run, argv)


def export(run_dir: str, format: str, output_dir: str, *, overwrite: bool = False) -> None:
    """Write the model in `run_dir` to `output_dir` in `format`; the folder appears whole or not at all."""
    check_request(run_dir, format, output_dir, overwrite)
    from tf_finetune.models import load_tokenizer

    model, tokenizer = load_run_model(run_dir), load_tokenizer(run_dir)
    if format == "pytorch":
        write_dir_atomic(output_dir, lambda folder: _write_pytorch(model, tokenizer, run_dir, folder))
    else:
        write_dir_atomic(output_dir, lambda folder: _write_savedmodel(model, tokenizer, folder))
    logger.info("Wrote %s.", output_dir)


def add_pytorch_weights(output_dir: str) -> str:
    """Write the PyTorch export of a run into its own `output_dir/pytorch/` (what `--hub_export pytorch` uploads
    with the run); returns that folder. PyTorch users load it with `from_pretrained(repo, subfolder="pytorch")`."""
    folder = os.path.join(output_dir, PYTORCH_DIR)
    from tf_finetune.models import load_tokenizer

    model, tokenizer = load_run_model(output_dir), load_tokenizer(output_dir)
    write_dir_atomic(folder, lambda staging: _write_pytorch(model, tokenizer, output_dir, staging))
    return folder


def check_request(run_dir: str, format: str, output_dir: str, overwrite: bool) -> None:
    """Raise a UserError for a folder that is not a saved model, an unknown format or an occupied --output_dir."""
    if format not in FORMATS:
        raise UserError(f"unknown --format {format!r}; pass one of {', '.join(FORMATS)}.")
    if format == "onnx":
        raise UserError(ONNX_UNSUPPORTED)
    if not os.path.isfile(os.path.join(run_dir, "config.json")):
        raise UserError(f"{run_dir} is not a saved model (no config.json); pass a run's output directory or a "
                        "save_pretrained folder.")
    if os.path.realpath(run_dir) == os.path.realpath(output_dir):
        raise UserError(f"--output_dir {output_dir} is the model's own folder; pass another folder.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UserError(f"--output_dir {output_dir} is a file, not a folder; pass a folder path.")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise UserError(f"--output_dir {output_dir} is not empty; pass --overwrite_output_dir to replace it, or "
                        "another folder.")


def load_run_model(run_dir: str) -> Any:
    """The run's TF model, with the Auto class of its task (run_config.json), else of its saved architecture
    (LoRA adapters merged, PyTorch-only checkpoints converted, as tf_finetune.models.load_model does)."""
    from tf_finetune.models import load_model, load_model_config
    from tf_finetune.tasks import get_task, task_for_architectures

    config = load_model_config(run_dir)
    run_config = os.path.join(run_dir, "run_config.json")
    task = get_task(read_json(run_config)["task"]) if os.path.isfile(run_config) else None
    task = task or task_for_architectures(config.architectures)
    return load_model(task.auto_model_class if task else "TFAutoModel", run_dir, config)


def _write_pytorch(model: Any, tokenizer: Any, run_dir: str, folder: str) -> None:
    from tf_finetune.pytorch_weights import PytorchWeights, pytorch_architecture

    PytorchWeights(model).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    architecture = pytorch_architecture(model)
    write_text(os.path.join(folder, "README.md"),
               f"# {os.path.basename(os.path.abspath(run_dir))} (PyTorch)\n\n"
               f"PyTorch weights of the TensorFlow model {os.path.basename(os.path.abspath(run_dir))}, exported by "
               f"`tf_finetune.export`. Load with "
               f"`transformers.AutoModel...from_pretrained(folder)` ({architecture}); no TensorFlow needed.\n")


def _write_savedmodel(model: Any, tokenizer: Any, folder: str) -> None:
    from tf_finetune.savedmodel import save_savedmodel

    save_savedmodel(model, tokenizer, folder)
    tokenizer.save_pretrained(os.path.join(folder, "assets", "tokenizer"))


if __name__ == "__main__":
    sys.exit(main())

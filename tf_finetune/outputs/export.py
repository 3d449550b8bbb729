"""Exports of a saved model that outlive transformers' TensorFlow classes: PyTorch weights, SavedModels and GGUF
files."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Optional

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json, write_dir_atomic, write_text
from tf_finetune.core.layout import MODEL_CARD_FILE, MODEL_CONFIG_FILE, PYTORCH_DIR, RUN_CONFIG_FILE

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from tf_finetune.tasks.base import Task

logger = logging.getLogger(__name__)

FORMATS = ("pytorch", "savedmodel", "gguf", "onnx")
ONNX_UNSUPPORTED = ("--format onnx is not offered: tf2onnx 1.17, the TensorFlow-to-ONNX converter, leaves TensorFlow "
                    "2.21's GELU as an Erfc op that ONNX Runtime rejects, so the BERT graphs it writes do not load; "
                    "export with --format pytorch and convert that with PyTorch's torch.onnx.export.")


def export(run_dir: str, format: str, output_dir: str, *, overwrite: bool = False, outtype: str = "f16") -> None:
    """Write the model in `run_dir` to `output_dir` in `format` (GGUF weights as `outtype`); the folder appears
    whole or not at all."""
    check_request(run_dir, format, output_dir, overwrite)
    model, preprocessor = load_run_model(run_dir), load_run_preprocessor(run_dir)
    if format == "pytorch":
        write_dir_atomic(output_dir, lambda folder: _write_pytorch(model, preprocessor, run_dir, folder))
    elif format == "gguf":
        from tf_finetune.models.gguf_export import check_exportable

        check_exportable(model, preprocessor, outtype)  # before any file is written
        write_dir_atomic(output_dir, lambda folder: _write_gguf(model, preprocessor, run_dir, folder, outtype))
    else:
        write_dir_atomic(output_dir, lambda folder: _write_savedmodel(model, preprocessor, folder))
    logger.info("Wrote %s.", output_dir)


def add_pytorch_weights(output_dir: str) -> str:
    """Write the PyTorch export of a run into its own `output_dir/pytorch/` (what `--hub_export pytorch` uploads
    with the run); returns that folder. PyTorch users load it with `from_pretrained(repo, subfolder="pytorch")`."""
    folder = os.path.join(output_dir, PYTORCH_DIR)
    model, preprocessor = load_run_model(output_dir), load_run_preprocessor(output_dir)
    write_dir_atomic(folder, lambda staging: _write_pytorch(model, preprocessor, output_dir, staging))
    return folder


def check_request(run_dir: str, format: str, output_dir: str, overwrite: bool) -> None:
    """Raise a UserError for a folder that is not a saved model, an unknown format or an occupied --output_dir."""
    if format not in FORMATS:
        raise UserError(f"unknown --format {format!r}; pass one of {', '.join(FORMATS)}.")
    if format == "onnx":
        raise UserError(ONNX_UNSUPPORTED)
    if not os.path.isfile(os.path.join(run_dir, MODEL_CONFIG_FILE)):
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
    """The run's TF model, with the Auto class of its task (see run_task), else TFAutoModel (LoRA adapters merged,
    PyTorch-only checkpoints converted, as tf_finetune.models.loading.load_model does)."""
    from tf_finetune.models.loading import load_model, load_model_config

    config = load_model_config(run_dir)
    task = run_task(run_dir, config)
    return load_model(task.auto_model_class if task else "TFAutoModel", run_dir, config)


def load_run_preprocessor(run_dir: str) -> Any:
    """The preprocessor saved with the run, loaded by its task (see run_task), else as a tokenizer."""
    from tf_finetune.models.loading import load_model_config, load_tokenizer

    task = run_task(run_dir, load_model_config(run_dir))
    return task.load_preprocessor(run_dir) if task else load_tokenizer(run_dir)


def run_task(run_dir: str, config: "PretrainedConfig") -> Optional["Task"]:
    """The task of a saved model: its run's (run_config.json), else the one its saved architecture suggests, or
    None."""
    from tf_finetune.tasks import get_task, task_for_architectures

    run_config = os.path.join(run_dir, RUN_CONFIG_FILE)
    task = get_task(read_json(run_config)["task"]) if os.path.isfile(run_config) else None
    return task or task_for_architectures(config.architectures)


def _write_pytorch(model: Any, preprocessor: Any, run_dir: str, folder: str) -> None:
    from tf_finetune.models.pytorch_weights import PytorchWeights, pytorch_architecture

    PytorchWeights(model).save_pretrained(folder)
    preprocessor.save_pretrained(folder)
    architecture = pytorch_architecture(model)
    write_text(os.path.join(folder, MODEL_CARD_FILE),
               f"# {os.path.basename(os.path.abspath(run_dir))} (PyTorch)\n\n"
               f"PyTorch weights of the TensorFlow model {os.path.basename(os.path.abspath(run_dir))}, exported by "
               f"`tf_finetune.export`. Load with "
               f"`transformers.AutoModel...from_pretrained(folder)` ({architecture}); no TensorFlow needed.\n")


def _write_gguf(model: Any, tokenizer: Any, run_dir: str, folder: str, outtype: str) -> None:
    from tf_finetune.models.gguf_export import write_gguf

    name = os.path.basename(os.path.abspath(run_dir))
    file_name = f"{name}-{outtype.upper()}.gguf"
    write_gguf(model, tokenizer, os.path.join(folder, file_name), outtype, name)
    write_text(os.path.join(folder, MODEL_CARD_FILE),
               f"# {name} (GGUF, {outtype})\n\n"
               f"The TensorFlow model {name} as a GGUF file for llama.cpp, exported by `tf_finetune.export`, "
               f"tokenizer and chat template included: `llama-cli -m {file_name}`, or "
               f"`python -m tf_finetune.train --model_name_or_path {file_name}` to train on from it.\n")


def _write_savedmodel(model: Any, tokenizer: Any, folder: str) -> None:
    from tf_finetune.models.savedmodel import save_savedmodel

    save_savedmodel(model, tokenizer, folder)
    tokenizer.save_pretrained(os.path.join(folder, "assets", "tokenizer"))

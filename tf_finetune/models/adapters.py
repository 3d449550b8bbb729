"""LoRA adapters as PEFT files: `adapter/adapter_config.json` and `adapter/adapter_model.safetensors`, with
PyTorch parameter names and shapes, so PyTorch PEFT loads them; and back onto a TF model."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import tf_keras
from transformers.modeling_tf_pytorch_utils import TransposeType

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import write_json
from tf_finetune.core.layout import ADAPTER_DIR
from tf_finetune.models.lora import LoraSettings, add_lora, lora_layers, module_path, pytorch_name

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PEFT's prefix for the wrapped model's parameters


@dataclass
class LoraAdapter:
    """The trained adapter of a model, taken out as PEFT tensors (so it can be saved after the model is merged)."""

    settings: LoraSettings
    tensors: dict[str, np.ndarray]
    base_model: str
    task_type: Optional[str]

    @classmethod
    def from_model(cls, model: tf_keras.Model, settings: LoraSettings, base_model: str,
                   task_type: Optional[str]) -> "LoraAdapter":
        """The adapters (A as (r, in), B as (out, r)) and the weights of the modules saved in full."""
        tensors, adapter_weights = {}, set()
        for wrapper in lora_layers(model):
            path = f"{_PREFIX}{module_path(wrapper.base)}"
            tensors[f"{path}.lora_A.weight"] = wrapper.lora_A.numpy().T
            tensors[f"{path}.lora_B.weight"] = wrapper.lora_B.numpy().T
            adapter_weights |= {id(wrapper.lora_A), id(wrapper.lora_B)}
        for weight in model.trainable_weights:  # the modules to save: everything else that trains
            if id(weight) not in adapter_weights:
                name, transpose = pytorch_name(weight)
                tensors[_PREFIX + name] = _to_pytorch(weight.numpy(), transpose, name)
        base = os.path.abspath(base_model) if os.path.isdir(base_model) else base_model
        return cls(settings, tensors, base, task_type)

    def save_pretrained(self, directory: str) -> None:
        """Write `adapter/` with PEFT's config and weights files into `directory`."""
        from safetensors.numpy import save_file

        folder = os.path.join(directory, ADAPTER_DIR)
        os.makedirs(folder, exist_ok=True)
        save_file({name: np.ascontiguousarray(value) for name, value in self.tensors.items()},
                  os.path.join(folder, WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(os.path.join(folder, CONFIG_FILE), {
            "peft_type": "LORA", "task_type": self.task_type, "base_model_name_or_path": self.base_model,
            "r": self.settings.rank, "lora_alpha": self.settings.alpha, "lora_dropout": self.settings.dropout,
            "target_modules": list(self.settings.target_modules),
            "modules_to_save": list(self.settings.modules_to_save) or None,
            "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        })


def describe_lora(run_config: dict[str, Any], results: dict[str, Any]) -> Optional[str]:
    """A model card's paragraph on a LoRA run (None for full fine-tuning), from its run_config and results."""
    if not run_config.get("lora_rank"):
        return None
    rank, alpha = run_config["lora_rank"], run_config.get("lora_alpha") or 2 * run_config["lora_rank"]
    targets = ", ".join(run_config.get("lora_target_modules") or ["the architecture's default"])
    share = ""
    if results.get("total_parameters"):
        share = (f" {results['trainable_parameters']:,} of {results['total_parameters']:,} parameters trained "
                 f"({100 * results['trainable_parameters'] / results['total_parameters']:.2f}%).")
    merged = ("merged into the weights here" if run_config.get("lora_merge", True)
              else "not merged: load the base model and add the adapter")
    return (f"Trained with LoRA: rank {rank}, alpha {alpha:g}, on {targets}.{share} The adapter is {merged}; "
            f"`{ADAPTER_DIR}/` holds it in the PEFT format.")


def adapter_config(directory: str) -> Optional[dict[str, Any]]:
    """The PEFT config in `directory/adapter/`, or None when there is none."""
    path = os.path.join(directory, ADAPTER_DIR, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def apply_adapter(model: tf_keras.Model, directory: str) -> tf_keras.Model:
    """Add the adapter saved in `directory/adapter/` to a base model (built from the same config) and merge it."""
    from safetensors.numpy import load_file

    from tf_finetune.models.lora import merge_into_base

    config = adapter_config(directory)
    settings = LoraSettings(rank=config["r"], alpha=config["lora_alpha"], dropout=config.get("lora_dropout") or 0.0,
                            target_modules=tuple(config["target_modules"]),
                            modules_to_save=tuple(config.get("modules_to_save") or ()))
    tensors = load_file(os.path.join(directory, ADAPTER_DIR, WEIGHTS_FILE))
    add_lora(model, settings)
    adapter_weights = set()
    for wrapper in lora_layers(model):
        path = f"{_PREFIX}{module_path(wrapper.base)}"
        wrapper.lora_A.assign(_tensor(tensors, f"{path}.lora_A.weight", directory).T)
        wrapper.lora_B.assign(_tensor(tensors, f"{path}.lora_B.weight", directory).T)
        adapter_weights |= {id(wrapper.lora_A), id(wrapper.lora_B)}
    for weight in model.trainable_weights:
        if id(weight) not in adapter_weights:
            name, transpose = pytorch_name(weight)
            weight.assign(_to_pytorch(_tensor(tensors, _PREFIX + name, directory), transpose, name))
    merge_into_base(model)
    model.trainable = True  # a plain model again: every weight trains if it is fine-tuned further
    return model


def _tensor(tensors: dict[str, np.ndarray], name: str, directory: str) -> np.ndarray:
    if name not in tensors:
        raise UserError(f"the adapter in {directory}/{ADAPTER_DIR} has no {name}; it was trained for another "
                        "model: pass the base model it was trained on.")
    return tensors[name]


def _to_pytorch(value: np.ndarray, transpose: TransposeType, name: str) -> np.ndarray:
    """A TF value in PyTorch's layout (and back: both are plain transposes)."""
    if transpose == TransposeType.SIMPLE:
        return value.T
    if transpose == TransposeType.NO:
        return value
    raise UserError(f"cannot write {name} in PyTorch's layout ({transpose.value} transpose); leave it out of "
                    "--modules_to_save.")

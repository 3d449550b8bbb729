"""A TF model's weights under PyTorch parameter names and layouts: `model.safetensors` (format "pt") that PyTorch
transformers (v4 and v5) loads. Plain numpy: writing it needs no PyTorch."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from transformers.modeling_tf_pytorch_utils import apply_transpose

from tf_finetune.core.errors import UserError
from tf_finetune.models.families import family_of
from tf_finetune.models.lora import lora_layers, pytorch_name

PYTORCH_WEIGHTS = "model.safetensors"


def pytorch_architecture(model: Any) -> str:
    """The PyTorch class name a transformers TF model exports as (TFBertForMaskedLM -> BertForMaskedLM)."""
    return family_of(model.config.model_type).pytorch_architecture(type(model).__name__)


def pytorch_state_dict(model: Any) -> dict[str, np.ndarray]:
    """Every weight of the model by its PyTorch state-dict name, in PyTorch's layout (Dense kernels transposed).

    Tied weights (an LM head sharing the embeddings) are one TF variable and so appear once, under the embeddings'
    name; PyTorch transformers ties the head to them again when it loads the file.
    """
    if lora_layers(model):
        raise UserError("the model still holds unmerged LoRA adapters; load it with tf_finetune.models.loading.load_model, "
                        "which merges them, before exporting.")
    tensors: dict[str, np.ndarray] = {}
    for weight in model.weights:
        name, transpose = pytorch_name(weight)
        if name in tensors:
            raise UserError(f"two weights of {type(model).__name__} map to the PyTorch name {name}; this "
                            "architecture cannot be exported with PyTorch names.")
        value = apply_transpose(transpose, weight.numpy(), pt_to_tf=False)
        if name.endswith(".bias") and value.ndim == 2 and value.shape[0] == 1:
            value = value[0]  # TFConv1D (GPT-2 and kin) keeps its bias as (1, nf); PyTorch's Conv1D as (nf,)
        tensors[name] = np.ascontiguousarray(value)
    return tensors


class PytorchWeights:
    """`save_pretrained(directory)` writes the model's PyTorch `model.safetensors` (and, with `config`, a
    config.json naming the PyTorch architecture), so it can go through outputs.save_pretrained_atomic."""

    def __init__(self, model: Any, config: bool = True):
        self.model = model
        self.config = config

    def save_pretrained(self, directory: str) -> None:
        """Write the files into `directory`."""
        from safetensors.numpy import save_file

        os.makedirs(directory, exist_ok=True)
        save_file(pytorch_state_dict(self.model), os.path.join(directory, PYTORCH_WEIGHTS), metadata={"format": "pt"})
        if self.config:
            config = self.model.config.__class__.from_dict(self.model.config.to_dict())
            config.architectures = [pytorch_architecture(self.model)]
            if family_of(config.model_type).untied_output:
                config.tie_word_embeddings = False  # the TF class trained its own output weight: PyTorch must not tie
            config.save_pretrained(directory)

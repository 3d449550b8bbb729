"""A checkpoint's PyTorch-format safetensors (one file or shards) or state dict loaded into a TF model, and the check
that every weight of the checkpoint's base model found a place in it."""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from tf_finetune.core.errors import UserError
from tf_finetune.models.families import BUFFERS, family_of


def load_pytorch_safetensors(auto_class: Any, config: Any, paths: Sequence[str]) -> tuple[Any, dict]:
    """A model of the Auto class built from `config` holding the weights of the PyTorch-format safetensors files
    (all shards of one checkpoint), and transformers' loading info plus `base_model_named` (whether the checkpoint's
    names carry the base-model prefix). transformers 4.57 cannot do this itself (its TF loader iterates the
    safe_open handle: issues 40028, 40318)."""
    from safetensors.numpy import load_file

    state_dict: dict[str, np.ndarray] = {}
    for path in paths:
        state_dict.update(load_file(path))
    return load_pytorch_state_dict(auto_class.from_config(config), state_dict)


def load_pytorch_state_dict(model: Any, state_dict: dict[str, np.ndarray]) -> tuple[Any, dict]:
    """`model` holding the weights of a PyTorch state dict, and the loading info of load_pytorch_safetensors."""
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    _untie_output(state_dict, model.config)
    model, info = load_pytorch_state_dict_in_tf2_model(model, state_dict, allow_missing_keys=True,
                                                       output_loading_info=True)
    info["base_model_named"] = any(name.startswith(f"{model.base_model_prefix}.") for name in state_dict)
    return model, info


def check_no_stray_weights(model: Any, unexpected: Sequence[str], base_model_named: bool, name_or_path: str) -> None:
    """Raise a UserError when weights of the checkpoint's base model have no place in `model` (e.g. Qwen2's q/k/v
    biases in a Mistral model): they would be dropped without a word and the model would compute something else.

    `unexpected` are the checkpoint's weights that were not loaded, less those transformers' class leaves out on
    purpose (its `_keys_to_ignore_on_load_unexpected`: a pooler the task head does not use, pretraining heads). Of
    those, a weight counts when it lies in the base model, i.e. its name starts with the base-model prefix
    (`bert.`, `model.`; `bert/` in TF weights), or the checkpoint is a bare base model whose names have no prefix
    (`base_model_named` False), and it is not a buffer (BUFFERS: position ids, rotary frequencies, masks).
    Weights outside the base model are another task's head (`cls.predictions.*`, `lm_head.*`, `classifier.*`),
    legitimately dropped when loading for a different task.
    """
    prefix = model.base_model_prefix
    stray = sorted(name for name in unexpected
                   if (re.split(r"[./]", name)[0] == prefix or not base_model_named)
                   and not any(re.search(pattern, name) for pattern in BUFFERS))
    if stray:
        raise UserError(f"{name_or_path} has {len(stray)} weight(s) of its base model that "
                        f"{type(model).__name__} has no place for (first: {stray[0]}); it is a variant this TF class "
                        "does not implement: pick a checkpoint of a supported architecture.")


def _untie_output(state_dict: dict[str, np.ndarray], config: Any) -> None:
    """Give a TF class that keeps its own output weight the embeddings a tied PyTorch checkpoint stores alone."""
    names = family_of(config.model_type).untied_output
    if names and getattr(config, "tie_word_embeddings", False) and names[1] in state_dict:
        state_dict.setdefault(names[0], state_dict[names[1]])

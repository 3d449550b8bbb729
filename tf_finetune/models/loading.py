"""Loading tokenizers and TF Auto models from the Hub or any local checkpoint (TF or PyTorch-only weights, or a GGUF
file)."""
from __future__ import annotations

import functools
import json
import logging
import os
import re
from typing import Any, Optional

import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from tf_finetune.core.errors import UserError
from tf_finetune.hub.client import hub_reachable, is_repo_id
from tf_finetune.models.checkpoint_weights import check_no_stray_weights, load_pytorch_safetensors
from tf_finetune.models.families import family_of
from tf_finetune.models.gguf import gguf_config, gguf_file, gguf_tokenizer, load_gguf_model

logger = logging.getLogger(__name__)

_TF_WEIGHTS = ("tf_model.h5", "tf_model.h5.index.json")
_SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")


def load_model_config(name_or_path: str, **overrides: Any) -> PretrainedConfig:
    """The checkpoint's config, with task fields (num_labels, id2label, ...) set; clear errors for bad paths and for
    config features the TF class does not implement (see models.families)."""
    gguf = gguf_file(name_or_path)
    try:
        config = gguf_config(gguf, **overrides) if gguf else AutoConfig.from_pretrained(
            name_or_path, local_files_only=cache_only(name_or_path), **overrides)
    except OSError as error:
        raise _not_loadable(name_or_path, error) from error
    except ValueError as error:  # e.g. an unknown model_type
        raise UserError(f"{name_or_path} is not a model transformers can load: {str(error).splitlines()[0]}")
    return family_of(config.model_type).check_config(config, name_or_path)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The fast tokenizer of a checkpoint (or of a GGUF file)."""
    gguf = gguf_file(name_or_path)
    if gguf:
        return gguf_tokenizer(gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True,
                                                  local_files_only=cache_only(name_or_path))
    except OSError as error:
        raise _not_loadable(name_or_path, error) from error
    except (TypeError, ValueError) as error:  # e.g. a model directory without tokenizer files
        raise UserError(f"cannot load a tokenizer from {name_or_path} ({type(error).__name__}); pass one that "
                        "has tokenizer files with --tokenizer_name.") from error
    if not tokenizer.is_fast:
        raise UserError(f"{name_or_path} has no fast tokenizer (tokenizer.json); tf-finetune needs one.")
    return tokenizer


def load_model(auto_class_name: str, name_or_path: str, config: PretrainedConfig) -> "transformers.TFPreTrainedModel":
    """A TF model of the given Auto class with pretrained weights: native TF checkpoints load as usual,
    PyTorch-only safetensors (`model.safetensors` or shards) are converted (transformers 4.57 cannot load them into
    TF itself), GGUF files are dequantized (models.gguf). Weights of the checkpoint's base model that have no place
    in the model are a UserError (see checkpoint_weights.check_no_stray_weights); missing ones are new and logged."""
    auto_class = check_auto_class(auto_class_name, name_or_path, config)
    gguf = gguf_file(name_or_path)
    if gguf:
        model, loading_info = load_gguf_model(auto_class, config, gguf)
        _log_new_weights(loading_info["missing_keys"])
        return model
    weights = _find_weights(name_or_path)
    if weights is None and os.path.isdir(name_or_path):
        from tf_finetune.models.adapters import adapter_config, apply_adapter

        adapter = adapter_config(name_or_path)  # a LoRA run saved without merging: its base model plus the adapter
        if adapter:
            base = load_model(auto_class_name, adapter["base_model_name_or_path"], config)
            return apply_adapter(base, name_or_path)
    if weights is None:
        raise UserError(f"{name_or_path} has no TensorFlow weights (tf_model.h5) nor model.safetensors (or its "
                        "shards); export it with save_pretrained or pass another checkpoint.")
    try:
        shards = _safetensors_shards(name_or_path, weights) if os.path.basename(weights) in _SAFETENSORS else []
        if shards and _safetensors_format(shards[0]) == "pt":
            model, loading_info = load_pytorch_safetensors(auto_class, config, shards)
        else:
            model, loading_info = auto_class.from_pretrained(name_or_path, config=config, output_loading_info=True,
                                                             local_files_only=cache_only(name_or_path))
            loading_info["base_model_named"] = True  # TF weights always name the main layer
    except ValueError as error:  # e.g. a classifier head trained for another number of labels
        raise UserError(f"cannot load the weights of {name_or_path} into {auto_class_name}: "
                        f"{str(error).strip().splitlines()[0]}; start from a checkpoint without that head.") from error
    except (OSError, SafetensorError) as error:  # h5py or safetensors failing on a file cut short or damaged
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{name_or_path}: {os.path.basename(weights)} is damaged or incomplete ({detail}); "
                        "save or download the model again.") from error
    check_no_stray_weights(model, loading_info["unexpected_keys"], loading_info["base_model_named"], name_or_path)
    _log_new_weights(loading_info["missing_keys"])
    return model


def check_auto_class(auto_class_name: str, name_or_path: str, config: PretrainedConfig) -> Any:
    """The transformers Auto class, after checking it builds models of the config's type (e.g. a causal-LM head)."""
    auto_class = getattr(transformers, auto_class_name)
    if type(config) not in auto_class._model_mapping:
        raise UserError(f"{name_or_path} is a {config.model_type} model, and transformers has no "
                        f"{auto_class_name} for that type; pick a model that has one or another task.")
    return auto_class


def check_gradient_checkpointing(auto_class_name: str, name_or_path: str, config: PretrainedConfig) -> None:
    """Raise a UserError unless the class the Auto class builds for the config recomputes its layers in the
    backward pass (`supports_gradient_checkpointing`, as in PyTorch transformers) without dropout."""
    from tf_finetune.models.decoders import MODEL_TYPES

    model_class = check_auto_class(auto_class_name, name_or_path, config)._model_mapping[type(config)]
    if not getattr(model_class, "supports_gradient_checkpointing", False):
        raise UserError(f"--gradient_checkpointing works with the {', '.join(MODEL_TYPES)} families; {name_or_path} "
                        f"is a {config.model_type} model ({model_class.__name__}); drop the flag.")
    if getattr(config, "attention_dropout", 0):
        raise UserError(f"--gradient_checkpointing runs each layer again in the backward pass, which would draw new "
                        f"dropout masks; {name_or_path} has attention_dropout={config.attention_dropout}: save its "
                        "config with attention_dropout 0, or drop --gradient_checkpointing.")


def check_vocabulary(name_or_path: str, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise a UserError for a tokenizer larger than the model's embeddings."""
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size and len(tokenizer) > vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens, more than the model's {vocab_size} embeddings: "
                        f"it is not {name_or_path}'s tokenizer; pass the matching one with --tokenizer_name.")


def check_model_fits(name_or_path: str, config: PretrainedConfig, builds_saved_head: bool) -> None:
    """Raise a UserError for a trained head (`builds_saved_head`: the checkpoint's architecture is the task's) for
    another number of labels than the data has."""
    saved_labels = load_model_config(name_or_path).num_labels if builds_saved_head else config.num_labels
    if saved_labels != config.num_labels:
        raise UserError(f"{name_or_path} has a classification head for {saved_labels} labels and the data has "
                        f"{config.num_labels}; start from its base model (a checkpoint without that head) or fix the "
                        "labels.")


def cache_only(name_or_path: str) -> bool:
    """Whether to load from local files only: a local directory, offline mode, or a Hub that cannot be reached.

    Raises a UserError at once for a Hub id that is neither reachable nor cached, instead of the clients'
    minute of retries.
    """
    from huggingface_hub import constants

    _check_local_path(name_or_path)
    if os.path.isdir(name_or_path) or constants.HF_HUB_OFFLINE:
        return True
    return _hub_copy_only(name_or_path, constants.ENDPOINT)


@functools.lru_cache(maxsize=None)
def _hub_copy_only(name_or_path: str, endpoint: str) -> bool:
    """For a Hub id: False when the Hub answers, True when only a cached copy can be used."""
    from huggingface_hub import try_to_load_from_cache

    if hub_reachable():
        return False
    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        logger.warning("The Hugging Face Hub (%s) cannot be reached: using the cached copy of %s.",
                       endpoint, name_or_path)
        return True
    raise _not_loadable(name_or_path, OSError("unreachable"))


def max_model_length(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest input the model accepts, and that its TF class computes as PyTorch does (its family's
    length fields)."""
    limits = [getattr(config, name, None) for name in family_of(config.model_type).length_fields]
    if tokenizer.model_max_length < 1e9:
        limits.append(tokenizer.model_max_length)
    return min(limit for limit in limits if limit) if any(limits) else int(1e9)


def _log_new_weights(missing: list[str]) -> None:
    """Say in one line which layers start from random weights (the task head, usually): transformers' own notice
    of this is hidden below --log_level debug."""
    layers = sorted({re.sub(r"[./:](weight|bias|kernel|gamma|beta)(:0)?$", "", name) for name in missing})
    if layers:
        logger.info("New in the model (randomly initialised, trained from scratch): %s.", ", ".join(layers))


def _find_weights(name_or_path: str) -> Optional[str]:
    """The local path of the checkpoint's weights file (downloading it for a Hub id), TF weights first."""
    from transformers.utils import cached_file

    for filename in (*_TF_WEIGHTS, *_SAFETENSORS):
        try:
            path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                               local_files_only=cache_only(name_or_path))
        except OSError as error:
            raise _not_loadable(name_or_path, error) from error
        if path:
            return path
    return None


def _safetensors_shards(name_or_path: str, weights: str) -> list[str]:
    """The local paths of a safetensors checkpoint's files: the file itself, or every shard its index names
    (downloading them for a Hub id)."""
    from transformers.utils.hub import get_checkpoint_shard_files

    if not weights.endswith(".index.json"):
        return [weights]
    return get_checkpoint_shard_files(name_or_path, weights, local_files_only=cache_only(name_or_path))[0]


def _safetensors_format(path: str) -> str:
    """The `format` a safetensors file declares ("pt", "tf", ...); "pt" when it says nothing."""
    with open(path, "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        try:
            header = json.loads(file.read(header_length))
        except ValueError as error:
            raise UserError(f"{path} is damaged or incomplete (its header is not readable); save or download the "
                            "model again.") from error
    return header.get("__metadata__", {}).get("format", "pt")


def _check_local_path(name_or_path: str) -> None:
    looks_local = not is_repo_id(name_or_path)
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise UserError(f"{name_or_path} is a directory but not a model (no config.json); pass a checkpoint "
                            "directory written by save_pretrained.")
    elif os.path.exists(name_or_path):
        raise UserError(f"{name_or_path} is a file, not a model directory; pass the directory that holds config.json.")
    elif looks_local:
        raise UserError(f"model path {name_or_path} does not exist; check --model_name_or_path.")


def _not_loadable(name_or_path: str, error: OSError) -> UserError:
    from huggingface_hub import constants

    if os.path.isdir(name_or_path):
        return UserError(f"cannot load {name_or_path}: {str(error).splitlines()[0]}")
    return UserError(f"cannot load '{name_or_path}': it is not a local directory and the Hugging Face Hub "
                     f"({constants.ENDPOINT}) cannot be reached or has no such model, nor is it in the cache "
                     f"({constants.HF_HUB_CACHE}); pass a local checkpoint directory to --model_name_or_path.")

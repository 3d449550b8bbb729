"""GGUF files (llama.cpp's format) as checkpoints: the config and tokenizer from the file's metadata, and its tensors
dequantized to float32 under PyTorch names, ready for the TF model.

The metadata names are translated with transformers' own GGUF tables and tokenizer converters, and the tensors are
read and dequantized with the `gguf` package (numpy only): unlike transformers' GGUF loader, nothing here needs
PyTorch. Which architectures are read, and whether llama.cpp permuted their q/k rows, is the family table's fact
(`Family.gguf`).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Iterable, Optional

import numpy as np
from transformers import AutoConfig, PretrainedConfig, PreTrainedTokenizerFast

from tf_finetune.core.errors import UserError
from tf_finetune.models.checkpoint_weights import load_pytorch_state_dict
from tf_finetune.models.families import FAMILIES, family_of
from tf_finetune.models.lora import pytorch_name

GGUF_SUFFIX = ".gguf"


def gguf_file(name_or_path: str) -> Optional[str]:
    """The GGUF file that `name_or_path` is or holds (a folder with one .gguf file and no config.json), else None."""
    if name_or_path.endswith(GGUF_SUFFIX) and os.path.isfile(name_or_path):
        return name_or_path
    if not os.path.isdir(name_or_path) or os.path.isfile(os.path.join(name_or_path, "config.json")):
        return None
    files = sorted(name for name in os.listdir(name_or_path) if name.endswith(GGUF_SUFFIX))
    if len(files) > 1:
        raise UserError(f"{name_or_path} holds {len(files)} GGUF files ({', '.join(files)}): pass the one to load as "
                        f"--model_name_or_path {os.path.join(name_or_path, files[0])}.")
    return os.path.join(name_or_path, files[0]) if files else None


def _read(path: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The file's reader and its metadata (see _metadata), read once for the config, tokenizer and weights of a
    load; a file changed since is read again."""
    stat = os.stat(path)
    return _read_file(os.path.realpath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _read_file(path: str, mtime_ns: int, size: int) -> tuple[Any, dict[str, dict[str, Any]]]:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise UserError(f"reading {path} needs the gguf package: pip install gguf") from None
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as error:
        raise UserError(f"{path} is not a readable GGUF file ({str(error).splitlines()[0][:200]}).") from None
    return reader, _metadata(reader, path)


def _metadata(reader: Any, path: str) -> dict[str, dict[str, Any]]:
    """The file's metadata renamed as transformers' GGUF loader renames it: {"config": ..., "tokenizer": ...,
    "tokenizer_config": ...}; a setting transformers' tables do not translate and that changes what the model
    computes (RoPE scaling) is a UserError."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING, _gguf_parse_value

    fields = {key: [_gguf_parse_value(field.parts[index], field.types) for index in field.data]
              for key, field in reader.fields.items()}
    values = {key: value[0] if len(value) == 1 else value for key, value in fields.items()}
    architecture = values.get("general.architecture")
    family = family_of(architecture or "")
    if family.gguf is None:
        readable = ", ".join(sorted(name for name, entry in FAMILIES.items() if entry.gguf))
        raise UserError(f"{path} holds a GGUF model of architecture {architecture!r}; tf-finetune reads GGUF files "
                        f"of {readable}.")
    scaling = values.get(f"{architecture}.rope.scaling.type", "none")
    if scaling != "none":
        raise UserError(f"{path} uses RoPE scaling {scaling!r} ({architecture}.rope.scaling.type), which tf-finetune "
                        "does not read from GGUF files; load the model's safetensors checkpoint instead.")
    parsed: dict[str, dict[str, Any]] = {section: {} for section in GGUF_TO_TRANSFORMERS_MAPPING}
    for key, value in values.items():
        prefix, _, rest = key.partition(".")
        for section, renames in GGUF_TO_TRANSFORMERS_MAPPING.items():
            name = renames.get(prefix, {}).get(rest)
            if name is not None and name != -1:
                parsed[section][name] = value
    return parsed


def gguf_config(path: str, **overrides: Any) -> PretrainedConfig:
    """The model config a GGUF file describes: transformers' translation of its metadata, the embeddings tied when
    the file has no output weight (as llama.cpp writes tied models), the biases present (Family.gguf.tensor_flags)
    and the head size read off the q projection (transformers' tables skip it for some architectures)."""
    reader, parsed = _read(path)
    values = dict(parsed["config"])
    values.pop("_model_name_or_path", None)
    shapes = {tensor.name: [int(n) for n in tensor.shape] for tensor in reader.tensors}
    values["tie_word_embeddings"] = "output.weight" not in shapes
    values.setdefault("vocab_size", len(parsed["tokenizer"].get("tokens", [])) or None)
    for flag, tensor_name in family_of(values["model_type"]).gguf.tensor_flags:
        values[flag] = tensor_name in shapes
    query = shapes.get("blk.0.attn_q.weight")
    if query:
        values["head_dim"] = query[-1] // values["num_attention_heads"]  # GGUF shapes list columns first
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if name in parsed["tokenizer_config"]:
            values[name] = int(parsed["tokenizer_config"][name])
    return AutoConfig.for_model(values.pop("model_type"), **{**values, **overrides})


def gguf_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """The tokenizer stored in a GGUF file, built by transformers' GGUF converters: its special tokens named by the
    file's token ids and its chat template, if it has one."""
    from transformers.integrations.ggml import convert_gguf_tokenizer

    _, parsed = _read(path)
    tokens, config = parsed["tokenizer"].get("tokens"), parsed["tokenizer_config"]
    if not tokens:
        raise UserError(f"{path} holds no tokenizer (tokenizer.ggml.tokens); pass one with --tokenizer_name.")
    tokenizer = dict(parsed["tokenizer"])  # a copy: the parsed metadata is cached (_read)
    backend, extra = convert_gguf_tokenizer(parsed["config"]["model_type"], tokenizer)
    special = {f"{name}_token": tokens[int(config[f"{name}_token_id"])] for name in ("bos", "eos", "unk", "pad")
               if f"{name}_token_id" in config}
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=config.get("chat_template"),
                                   **{**extra, **special})


def load_gguf_model(auto_class: Any, config: PretrainedConfig, path: str) -> tuple[Any, dict]:
    """A model of the Auto class built from `config` holding the GGUF file's weights, and the loading info of
    checkpoint_weights.load_pytorch_state_dict."""
    model = auto_class.from_config(config)
    model.build_in_name_scope()
    return load_pytorch_state_dict(model, gguf_state_dict(path, config, (pytorch_name(w)[0] for w in model.weights)))


def gguf_state_dict(path: str, config: PretrainedConfig, pytorch_names: Iterable[str]) -> dict[str, np.ndarray]:
    """The file's tensors dequantized to float32, under the PyTorch names among `pytorch_names` that gguf's name map
    gives them; q/k rows put back in PyTorch's order where llama.cpp permuted them. A tensor that maps to none of
    the names is a UserError (it would be dropped, and the model compute something else)."""
    from gguf import MODEL_ARCH_NAMES, dequantize, get_tensor_name_map

    reader, _ = _read(path)
    architecture = {name: arch for arch, name in MODEL_ARCH_NAMES.items()}[config.model_type]
    name_map = get_tensor_name_map(architecture, config.num_hidden_layers)
    names = {name_map.get_name(name, try_suffixes=(".weight", ".bias")): name for name in pytorch_names}
    names.pop(None, None)
    unplaced = [tensor.name for tensor in reader.tensors if tensor.name not in names]
    if unplaced:
        raise UserError(f"{path} has {len(unplaced)} tensor(s) with no place in the {config.model_type} model "
                        f"(first: {unplaced[0]}); it is a variant tf-finetune does not implement.")
    permuted = family_of(config.model_type).gguf.permuted_qk
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    state: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        weights = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        part = tensor.name.split(".")[-2]
        if permuted and part in heads:
            weights = _unpermute(weights, heads[part])
        state[names[tensor.name]] = weights
    return state


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (each head's two rotary halves interleaved) for PyTorch's (halves apart)."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)

"""A TF causal LM written as a GGUF file (llama.cpp's format), as llama.cpp's convert_hf_to_gguf.py writes one: the
config as the architecture's metadata, the byte-level BPE tokenizer with its special tokens and chat template, and
the weights under llama.cpp's names (q/k rows permuted where llama.cpp expects it), as f16 or q8_0, through the
`gguf` package. tf_finetune.models.gguf reads such files back.

Importing the module imports neither transformers nor TensorFlow (the export command lists OUTTYPES in its help).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from tf_finetune.core.errors import UserError

OUTTYPES = ("f16", "q8_0")  # llama.cpp's --outtype names
_FLOAT_KEYS = ("rope.freq_base", "attention.layer_norm_rms_epsilon")  # llama.cpp reads these as float32
_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED = 1, 3, 4  # gguf's TokenType values


def check_exportable(model: Any, tokenizer: Any, outtype: str) -> None:
    """Raise a UserError for what this writer does not write: another outtype, a model that is not a causal LM of a
    family with a GGUF layout, RoPE scaling, or a tokenizer that is not byte-level BPE."""
    from tf_finetune.models.families import FAMILIES, family_of

    if outtype not in OUTTYPES:
        raise UserError(f"unknown --outtype {outtype!r}; pass one of {', '.join(OUTTYPES)}.")
    config = model.config
    family = family_of(config.model_type)
    if family.gguf is None or not type(model).__name__.endswith("ForCausalLM"):
        readable = ", ".join(sorted(name for name, entry in FAMILIES.items() if entry.gguf))
        raise UserError(f"--format gguf writes causal LMs of {readable}; this is a {type(model).__name__}.")
    scaling = getattr(config, "rope_scaling", None) or {}
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise UserError(f"the model uses rope_scaling {scaling}, which --format gguf does not write; export it with "
                        "--format pytorch and convert that with llama.cpp's convert_hf_to_gguf.py.")
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "BPE" or "ByteLevel" not in json.dumps(backend.get("pre_tokenizer")):
        raise UserError(f"--format gguf writes byte-level BPE tokenizers (GPT-2's kind); this one is a "
                        f"{backend['model']['type']} tokenizer: export with --format pytorch and convert that with "
                        "llama.cpp's convert_hf_to_gguf.py.")


def write_gguf(model: Any, tokenizer: Any, path: str, outtype: str, name: str) -> None:
    """Write the model and its tokenizer to the GGUF file `path` (see check_exportable for what is refused)."""
    import gguf

    from tf_finetune.models.families import family_of
    from tf_finetune.models.pytorch_weights import pytorch_state_dict

    check_exportable(model, tokenizer, outtype)
    config, architecture = model.config, model.config.model_type
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    _add_config(writer, config)
    _add_tokenizer(writer, tokenizer, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[architecture.upper()], config.num_hidden_layers)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    for pytorch_name, weights in pytorch_state_dict(model).items():
        gguf_name = names.get_name(pytorch_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"{pytorch_name} has no GGUF name in llama.cpp's {architecture} layout; export with "
                            "--format pytorch instead.")
        part = pytorch_name.split(".")[-2]
        if family_of(architecture).gguf.permuted_qk and part in heads:
            weights = permute_qk(weights, heads[part])
        _add_tensor(writer, gguf, gguf_name, weights, outtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def permute_qk(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: each head's two rotary halves interleaved (its LlamaModel.permute)."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _add_tensor(writer: Any, gguf: Any, name: str, weights: np.ndarray, outtype: str) -> None:
    """Norms and biases as F32, matrices as F16, or as Q8_0 where their rows split into its 32-value blocks."""
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    if weights.ndim < 2:
        writer.add_tensor(name, weights)
    elif outtype == "q8_0" and weights.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        writer.add_tensor(name, gguf.quantize(weights, gguf.GGMLQuantizationType.Q8_0),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, weights.astype(np.float16))


def _add_config(writer: Any, config: Any) -> None:
    """The architecture's metadata: transformers' GGUF table read backwards, and the head size llama.cpp reads."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING

    for key, field in GGUF_TO_TRANSFORMERS_MAPPING["config"][config.model_type].items():
        value = getattr(config, field, None) if field else None
        if value is None:
            continue
        if key in _FLOAT_KEYS:
            writer.add_float32(f"{config.model_type}.{key}", float(value))
        else:
            writer.add_uint32(f"{config.model_type}.{key}", int(value))
    size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_key_length(size)
    writer.add_value_length(size)


def _add_tokenizer(writer: Any, tokenizer: Any, config: Any) -> None:
    """A byte-level BPE tokenizer as GGUF's `gpt2` tokenizer model: tokens by id, their types, the merges, the
    special token ids and the chat template."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    special = set(tokenizer.all_special_ids)
    added = {token["id"]: token for token in backend.get("added_tokens", [])}
    types = [_TOKEN_CONTROL if index in special or added.get(index, {}).get("special") else
             _TOKEN_USER_DEFINED if index in added else _TOKEN_NORMAL for index in range(len(tokenizer))]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    writer.add_token_types(types)
    writer.add_token_merges([merge if isinstance(merge, str) else " ".join(merge)
                             for merge in backend["model"]["merges"]])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

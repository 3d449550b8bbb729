"""Model families as data, keyed by `model_type`: the config features their TF class does not implement (refused,
never ignored), the default LoRA targets, the config fields that bound the input length, how the output weight is
kept, how llama.cpp writes their GGUF files and whether mixed precision runs; and the buffers PyTorch checkpoints
may carry.

The TF class of a family is transformers' own, or tf-finetune's (tf_finetune.models.decoders: llama, qwen2, qwen3,
gemma2, gemma3_text), found through transformers' TF Auto classes. A family without an entry loads with its TF
class and no family-specific facts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from transformers import PretrainedConfig

from tf_finetune.core.errors import UserError


@dataclass(frozen=True)
class Unsupported:
    """A config feature the TF class computes differently from PyTorch, or not at all: `supported(config)` is
    False when the config uses it."""

    field: str
    supported: Callable[[PretrainedConfig], bool]


@dataclass(frozen=True)
class GgufLayout:
    """How llama.cpp writes a family's GGUF files (the architecture name is the model_type)."""

    permuted_qk: bool = False  # q/k projection rows reordered for llama.cpp's RoPE (its LlamaModel.permute)
    # config flags the metadata does not hold, each set when the file has the tensor named (llama.cpp reads them so)
    tensor_flags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Family:
    """What tf-finetune knows about one model family."""

    model_type: str
    lora_targets: tuple[str, ...] = ()  # PEFT's default target_modules for the architecture; () = none known
    unsupported: tuple[Unsupported, ...] = ()
    length_fields: tuple[str, ...] = ("max_position_embeddings", "n_positions")
    # (output weight, input embeddings) by PyTorch name, for TF classes that keep their own output weight even when
    # the config ties the two: a PyTorch checkpoint that ties them stores the embeddings only.
    untied_output: Optional[tuple[str, str]] = None
    gguf: Optional[GgufLayout] = None  # GGUF files of the family are read (tf_finetune.models.gguf); None: refused
    mixed_precision: bool = True  # False: the TF class fails under a mixed-precision policy (refused)

    def check_config(self, config: PretrainedConfig, name_or_path: str) -> PretrainedConfig:
        """`config`, after raising a UserError for a config feature the TF class does not implement."""
        for feature in self.unsupported:
            if not feature.supported(config):
                raise UserError(f"{name_or_path} is a {self.model_type} model with {feature.field}="
                                f"{getattr(config, feature.field, None)!r}, which its TensorFlow class does not "
                                f"compute; pick a {self.model_type} checkpoint without it.")
        return config

    def check_mixed_precision(self, mixed_precision: str, name_or_path: str) -> None:
        """Raise a UserError for a mixed-precision policy (fp16, bf16) the TF class cannot run under."""
        if mixed_precision != "no" and not self.mixed_precision:
            raise UserError(f"{name_or_path} is a {self.model_type} model, and its TensorFlow class (transformers') "
                            f"fails under --mixed_precision {mixed_precision}: it builds its attention mask in "
                            "float32 only; drop --mixed_precision.")

    def pytorch_architecture(self, tf_class_name: str) -> str:
        """The PyTorch class a TF model of this family exports as (TFBertForMaskedLM -> BertForMaskedLM)."""
        if not tf_class_name.startswith("TF"):
            raise UserError(f"{tf_class_name} is not a transformers TF model class (TF...); export a model saved by "
                            "tf_finetune.train or TF save_pretrained.")
        return tf_class_name[len("TF"):]


def _head_dim_fits(config: PretrainedConfig) -> bool:
    """TFMistral computes the head size as hidden_size / num_attention_heads, whatever head_dim says."""
    head_dim = getattr(config, "head_dim", None)
    return head_dim is None or head_dim * config.num_attention_heads == config.hidden_size


def _rope_types(*types: str) -> Unsupported:
    """RoPE scaling of the given types only (tf_finetune.models.decoders.layers computes default, linear, llama3)."""
    def supported(config: PretrainedConfig) -> bool:
        scaling = getattr(config, "rope_scaling", None) or {}
        return scaling.get("rope_type", scaling.get("type", "default")) in types

    return Unsupported("rope_scaling", supported)


def _unset(name: str) -> Unsupported:
    return Unsupported(name, lambda config: not getattr(config, name, None))


_QUERY_VALUE = ("query", "value")
_MISTRAL_OUTPUT = ("lm_head.weight", "model.embed_tokens.weight")

_PROJECTIONS = ("q_proj", "v_proj")
_DECODER_ROPE = _rope_types("default", "linear", "llama3")

FAMILIES: dict[str, Family] = {family.model_type: family for family in (
    Family("albert", lora_targets=_QUERY_VALUE),
    Family("bert", lora_targets=_QUERY_VALUE),
    Family("camembert", lora_targets=_QUERY_VALUE),
    Family("distilbert", lora_targets=("q_lin", "v_lin")),
    Family("electra", lora_targets=_QUERY_VALUE),
    Family("mobilebert", lora_targets=_QUERY_VALUE),
    Family("mpnet", lora_targets=("q", "v")),
    Family("roberta", lora_targets=_QUERY_VALUE),
    Family("xlm-roberta", lora_targets=_QUERY_VALUE),
    # TFMistral has no sliding window (it attends to every earlier token): exact for inputs up to the window.
    Family("mistral", lora_targets=_PROJECTIONS,
           unsupported=(Unsupported("head_dim", _head_dim_fits), _rope_types("default")),
           length_fields=("max_position_embeddings", "sliding_window"), untied_output=_MISTRAL_OUTPUT,
           mixed_precision=False),
    Family("llama", lora_targets=_PROJECTIONS, unsupported=(_DECODER_ROPE,),
           length_fields=("max_position_embeddings",), gguf=GgufLayout(permuted_qk=True, tensor_flags=(
               ("attention_bias", "blk.0.attn_q.bias"), ("mlp_bias", "blk.0.ffn_up.bias")))),
    Family("qwen2", lora_targets=_PROJECTIONS, unsupported=(_DECODER_ROPE, _unset("use_sliding_window")),
           length_fields=("max_position_embeddings",), gguf=GgufLayout()),
    Family("gemma2", lora_targets=_PROJECTIONS, unsupported=(_DECODER_ROPE,),
           length_fields=("max_position_embeddings",)),
    Family("gemma3_text", lora_targets=_PROJECTIONS,
           unsupported=(_DECODER_ROPE, _unset("use_bidirectional_attention")),
           length_fields=("max_position_embeddings",)),
    Family("qwen3", lora_targets=_PROJECTIONS, unsupported=(_DECODER_ROPE, _unset("use_sliding_window")),
           length_fields=("max_position_embeddings",),
           gguf=GgufLayout(tensor_flags=(("attention_bias", "blk.0.attn_q.bias"),))),
)}

# PyTorch state-dict buffers (recomputed, not learnt) that checkpoints may hold: regexes of their names. The TF
# classes ignore some themselves (GPT-2's attn.bias mask); these they do not.
BUFFERS = (r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"\.inv_freq$", r"\.masked_bias$")


def family_of(model_type: str) -> Family:
    """The family's entry; a bare entry (its own TF class, nothing else known) for a model type not in the table."""
    return FAMILIES.get(model_type) or Family(model_type)

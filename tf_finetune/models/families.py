"""Model families as data, keyed by `model_type`: which TF class builds them (their own, or a stand-in's with a
translated config), the config features that class does not implement (refused, never ignored), the default LoRA
targets and the config fields that bound the input length; and the buffers PyTorch checkpoints may carry.

A family without an entry loads with its own TF class (if transformers has one) and no family-specific facts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from transformers import AutoConfig, PretrainedConfig

from tf_finetune.core.errors import UserError


@dataclass(frozen=True)
class Unsupported:
    """A config feature the TF class computes differently from PyTorch, or not at all: `supported(config)` is
    False when the config uses it."""

    field: str
    supported: Callable[[PretrainedConfig], bool]


@dataclass(frozen=True)
class StandIn:
    """Another family whose TF class computes this family's models exactly, once the config is translated: the
    fields the stand-in's config has no place for are dropped (after the refusals checked their values) and the
    stand-in's own extra features are set to what this family computes."""

    model_type: str
    dropped_fields: tuple[str, ...]
    set_fields: Mapping[str, Any]


@dataclass(frozen=True)
class Family:
    """What tf-finetune knows about one model family."""

    model_type: str
    lora_targets: tuple[str, ...] = ()  # PEFT's default target_modules for the architecture; () = none known
    unsupported: tuple[Unsupported, ...] = ()
    stand_in: Optional[StandIn] = None
    length_fields: tuple[str, ...] = ("max_position_embeddings", "n_positions")
    # (output weight, input embeddings) by PyTorch name, for TF classes that keep their own output weight even when
    # the config ties the two: a PyTorch checkpoint that ties them stores the embeddings only.
    untied_output: Optional[tuple[str, str]] = None

    def tf_config(self, config: PretrainedConfig, name_or_path: str) -> PretrainedConfig:
        """The config to build the TF model from: `config` itself, or its stand-in translation. Raises a UserError
        for a config feature the TF class does not implement."""
        tf_class = f"TF{_stem(self._tf_config_class(config))}"
        for feature in self.unsupported:
            if not feature.supported(config):
                raise UserError(f"{name_or_path} is a {self.model_type} model with {feature.field}="
                                f"{getattr(config, feature.field, None)!r}, which {tf_class} does not implement; "
                                f"pick a {self.model_type} checkpoint without it.")
        if self.stand_in is None:
            return config
        values = {key: value for key, value in config.to_dict().items()
                  if key not in self.stand_in.dropped_fields and key not in ("model_type", "transformers_version")}
        target = self._tf_config_class(config)
        stems = (_stem(type(config)), _stem(target))
        values["architectures"] = [name.replace(*stems, 1) for name in config.architectures or []] or None
        return target.from_dict({**values, **self.stand_in.set_fields})

    def pytorch_architecture(self, tf_class_name: str) -> str:
        """The PyTorch class a TF model of this family exports as (TFBertForMaskedLM -> BertForMaskedLM)."""
        if not tf_class_name.startswith("TF"):
            raise UserError(f"{tf_class_name} is not a transformers TF model class (TF...); export a model saved by "
                            "tf_finetune.train or TF save_pretrained.")
        return tf_class_name[len("TF"):]

    def _tf_config_class(self, config: PretrainedConfig) -> type:
        return type(config) if self.stand_in is None else type(AutoConfig.for_model(self.stand_in.model_type))


def _stem(config_class: type) -> str:
    """A family's class-name stem (LlamaConfig -> Llama), shared by its model classes."""
    return config_class.__name__[:-len("Config")]


def _head_dim_fits(config: PretrainedConfig) -> bool:
    """TF classes compute the head size as hidden_size / num_attention_heads, whatever head_dim says."""
    head_dim = getattr(config, "head_dim", None)
    return head_dim is None or head_dim * config.num_attention_heads == config.hidden_size


def _no_rope_scaling(config: PretrainedConfig) -> bool:
    scaling = getattr(config, "rope_scaling", None) or {}
    return scaling.get("rope_type", scaling.get("type", "default")) == "default"


def _unset(name: str) -> Unsupported:
    return Unsupported(name, lambda config: not getattr(config, name, None))


_QUERY_VALUE = ("query", "value")
_MISTRAL_OUTPUT = ("lm_head.weight", "model.embed_tokens.weight")

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
    Family("mistral", lora_targets=("q_proj", "v_proj"),
           unsupported=(Unsupported("head_dim", _head_dim_fits), Unsupported("rope_scaling", _no_rope_scaling)),
           length_fields=("max_position_embeddings", "sliding_window"), untied_output=_MISTRAL_OUTPUT),
    # Llama without rope scaling, biases or an odd head size is Mistral without a sliding window (SmolLM2, ...).
    Family("llama", unsupported=(Unsupported("rope_scaling", _no_rope_scaling), _unset("attention_bias"),
                                 _unset("mlp_bias"), Unsupported("head_dim", _head_dim_fits)),
           stand_in=StandIn("mistral", dropped_fields=("rope_scaling", "attention_bias", "mlp_bias", "pretraining_tp"),
                            set_fields={"sliding_window": None})),
)}

# PyTorch state-dict buffers (recomputed, not learnt) that checkpoints may hold: regexes of their names. The TF
# classes ignore some themselves (GPT-2's attn.bias mask); these they do not.
BUFFERS = (r"(^|\.)position_ids$", r"(^|\.)token_type_ids$", r"\.inv_freq$", r"\.masked_bias$")


def family_of(model_type: str) -> Family:
    """The family's entry; a bare entry (its own TF class, nothing else known) for a model type not in the table."""
    return FAMILIES.get(model_type) or Family(model_type)

"""tf-keras classes for the LLM families transformers 4.57 has no TF class for, registered with its TF Auto classes
when this module is imported (`register`), so `TFAutoModelForCausalLM.from_pretrained` builds them like any other.

| model_type | what differs from TFMistral | classes: ForCausalLM, ForSequenceClassification |
|---|---|---|
| llama (Llama 2/3.x, SmolLM, TinyLlama) | attention_bias, mlp_bias, head_dim, rope_scaling linear/llama3 | both |
| qwen2 (Qwen2, Qwen2.5) | q/k/v biases | both |
| qwen3 | per-head RMSNorm on q and k, head_dim | both |
| gemma2 | (1 + w) RMSNorm, sandwich norms, scaled embeddings, query scale, soft caps, sliding window | both |
| gemma3_text | Gemma 2's, with q/k norm, no soft caps and a local RoPE base on sliding layers | both |

The config features these classes do not compute are refused in tf_finetune.models.families.
"""
from __future__ import annotations

from typing import Optional

from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

from tf_finetune.models.decoders.heads import causal_lm_class, sequence_classification_class
from tf_finetune.models.decoders.layers import DecoderVariant, decoder_main_layer


def _family(stem: str, config_class: type, variant: DecoderVariant,
            causal_lm_stem: Optional[str] = None) -> tuple[type, type, type]:
    """The main layer and the two heads, named as PyTorch transformers names them with a TF prefix."""
    main_layer = decoder_main_layer(config_class, variant)
    classes = (main_layer, causal_lm_class(f"TF{causal_lm_stem or stem}ForCausalLM", config_class, main_layer),
               sequence_classification_class(f"TF{stem}ForSequenceClassification", config_class, main_layer))
    for cls in classes:
        cls.__module__ = __name__
    return classes


TFLlamaMainLayer, TFLlamaForCausalLM, TFLlamaForSequenceClassification = _family(
    "Llama", LlamaConfig, DecoderVariant())
TFQwen2MainLayer, TFQwen2ForCausalLM, TFQwen2ForSequenceClassification = _family(
    "Qwen2", Qwen2Config, DecoderVariant(qkv_bias=True))
TFQwen3MainLayer, TFQwen3ForCausalLM, TFQwen3ForSequenceClassification = _family(
    "Qwen3", Qwen3Config, DecoderVariant(qk_norm=True))
_GEMMA = {"norm_offset": True, "sandwich_norms": True, "scaled_embeddings": True}
TFGemma2MainLayer, TFGemma2ForCausalLM, TFGemma2ForSequenceClassification = _family(
    "Gemma2", Gemma2Config, DecoderVariant(**_GEMMA))
TFGemma3TextMainLayer, TFGemma3ForCausalLM, TFGemma3TextForSequenceClassification = _family(
    "Gemma3Text", Gemma3TextConfig, DecoderVariant(qk_norm=True, **_GEMMA), causal_lm_stem="Gemma3")

_AUTO_CLASSES = {
    "TFAutoModelForCausalLM": (TFLlamaForCausalLM, TFQwen2ForCausalLM, TFQwen3ForCausalLM, TFGemma2ForCausalLM,
                               TFGemma3ForCausalLM),
    "TFAutoModelForSequenceClassification": (TFLlamaForSequenceClassification, TFQwen2ForSequenceClassification,
                                             TFQwen3ForSequenceClassification, TFGemma2ForSequenceClassification,
                                             TFGemma3TextForSequenceClassification),
}

MODEL_TYPES = tuple(cls.config_class.model_type for cls in _AUTO_CLASSES["TFAutoModelForCausalLM"])


def register() -> None:
    """Register the classes with transformers' TF Auto classes (idempotent)."""
    from transformers.models.auto import modeling_tf_auto

    for auto_name, classes in _AUTO_CLASSES.items():
        for cls in classes:
            getattr(modeling_tf_auto, auto_name).register(cls.config_class, cls, exist_ok=True)


register()

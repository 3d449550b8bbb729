"""The tf-keras layers of today's decoder-only LLMs (Llama, Qwen2, Qwen3), built on transformers' TF Mistral.

TFMistral computes a Llama-style decoder with the head size fixed to hidden_size / heads, no biases, no q/k norm
and plain RoPE. These layers lift those limits, each a switch of `DecoderVariant`, and reuse the rest of TFMistral
(its RMSNorm, MLP, rotary embedding, rotary application, GQA head repetition, masks, main-layer loop and
generation inputs). Weight names are PyTorch's (`model.layers.0.self_attn.q_proj`), so checkpoints convert both
ways with transformers' name mapping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from transformers import PretrainedConfig
from transformers.modeling_tf_utils import get_initializer, keras, keras_serializable
from transformers.models.mistral.modeling_tf_mistral import (
    TFMistralDecoderLayer,
    TFMistralMainLayer,
    TFMistralMLP,
    TFMistralRMSNorm,
    TFMistralRotaryEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)
from transformers.tf_utils import shape_list, stable_softmax


@dataclass(frozen=True)
class DecoderVariant:
    """How a family's decoder differs from TFMistral's: which projections have biases and whether q and k are
    RMS-normalised per head before RoPE (Qwen3)."""

    qkv_bias: bool = False  # Qwen2: biases on q, k and v only
    qk_norm: bool = False

    def attention_biases(self, config: PretrainedConfig) -> tuple[bool, bool]:
        """(q/k/v bias, output-projection bias): `attention_bias` sets both where the config has it (Llama, Qwen3)."""
        both = bool(getattr(config, "attention_bias", False))
        return self.qkv_bias or both, both


def head_dim(config: PretrainedConfig) -> int:
    """The attention head size: the config's head_dim where it sets one, else hidden_size / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_inverse_frequencies(config: PretrainedConfig) -> np.ndarray:
    """RoPE's inverse frequencies, float32, as PyTorch transformers computes them for rope types `default`,
    `linear` and `llama3` (families.py refuses the others before a model is built)."""
    dim = head_dim(config)
    inverse = 1.0 / (config.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "linear":
        inverse = inverse / scaling["factor"]
    elif rope_type == "llama3":  # Llama 3.1: long wavelengths slowed by `factor`, a smooth blend in between
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_context = scaling["original_max_position_embeddings"]
        wavelength = 2 * math.pi / inverse
        scaled = np.where(wavelength > old_context / low, inverse / factor, inverse)
        smooth = (old_context / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= old_context / high) & (wavelength <= old_context / low)
        inverse = np.where(medium, blended, scaled)
    return inverse.astype(np.float32)


class TFDecoderRotaryEmbedding(TFMistralRotaryEmbedding):
    """TFMistral's rotary embedding with the family's (possibly scaled) inverse frequencies."""

    def __init__(self, config: PretrainedConfig, **kwargs: Any):
        super().__init__(head_dim(config), config.max_position_embeddings, config.rope_theta, **kwargs)
        self.inv_freq = tf.constant(rope_inverse_frequencies(config))


class TFDecoderMLP(TFMistralMLP):
    """TFMistral's gated MLP, with biases where the config sets `mlp_bias` (Llama)."""

    def __init__(self, config: PretrainedConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        if getattr(config, "mlp_bias", False):
            self.gate_proj = keras.layers.Dense(self.intermediate_size, use_bias=True, name="gate_proj")
            self.up_proj = keras.layers.Dense(self.intermediate_size, use_bias=True, name="up_proj")
            self.down_proj = keras.layers.Dense(self.hidden_size, use_bias=True, name="down_proj")


class TFDecoderAttention(keras.layers.Layer):
    """Grouped-query self-attention with RoPE, any head size, optional biases and optional per-head q/k norm.
    The cache is TFMistral's: a (key, value) pair per layer, each (batch, kv heads, length, head size)."""

    def __init__(self, config: PretrainedConfig, variant: DecoderVariant, **kwargs: Any):
        super().__init__(**kwargs)
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = head_dim(config)
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        qkv_bias, output_bias = variant.attention_biases(config)
        self.q_proj = keras.layers.Dense(self.num_heads * self.head_dim, use_bias=qkv_bias, name="q_proj")
        self.k_proj = keras.layers.Dense(self.num_key_value_heads * self.head_dim, use_bias=qkv_bias, name="k_proj")
        self.v_proj = keras.layers.Dense(self.num_key_value_heads * self.head_dim, use_bias=qkv_bias, name="v_proj")
        self.o_proj = keras.layers.Dense(self.hidden_size, use_bias=output_bias, name="o_proj")
        self.q_norm = TFMistralRMSNorm(self.head_dim, eps=config.rms_norm_eps, name="q_norm") if variant.qk_norm \
            else None
        self.k_norm = TFMistralRMSNorm(self.head_dim, eps=config.rms_norm_eps, name="k_norm") if variant.qk_norm \
            else None
        self.rotary_emb = TFDecoderRotaryEmbedding(config, name="rotary_emb")
        self.dropout = keras.layers.Dropout(rate=config.attention_dropout)

    def _heads(self, states: tf.Tensor, heads: int, norm: Optional[keras.layers.Layer]) -> tf.Tensor:
        batch, length = shape_list(states)[:2]
        states = tf.reshape(states, (batch, length, heads, self.head_dim))
        if norm is not None:
            states = norm(states)
        return tf.transpose(states, perm=(0, 2, 1, 3))

    def call(self, hidden_states: tf.Tensor, attention_mask: Optional[tf.Tensor] = None,
             position_ids: Optional[tf.Tensor] = None, past_key_value: Optional[tuple[tf.Tensor, tf.Tensor]] = None,
             output_attentions: Optional[bool] = False, use_cache: Optional[bool] = False, training: Any = None,
             **kwargs: Any) -> tuple[tf.Tensor, Optional[tf.Tensor], Optional[tuple[tf.Tensor, tf.Tensor]]]:
        batch, length, _ = shape_list(hidden_states)
        query = self._heads(self.q_proj(hidden_states), self.num_heads, self.q_norm)
        key = self._heads(self.k_proj(hidden_states), self.num_key_value_heads, self.k_norm)
        value = self._heads(self.v_proj(hidden_states), self.num_key_value_heads, None)

        total_length = length + (shape_list(past_key_value[0])[-2] if past_key_value is not None else 0)
        cos, sin = self.rotary_emb(x=value, seq_len=total_length)
        query, key = apply_rotary_pos_emb(q=query, k=key, cos=cos, sin=sin, position_ids=position_ids)
        if past_key_value is not None:
            key = tf.concat([past_key_value[0], key], axis=2)
            value = tf.concat([past_key_value[1], value], axis=2)
        present = (key, value) if use_cache else None

        key = repeat_kv(key, self.num_key_value_groups)
        value = repeat_kv(value, self.num_key_value_groups)
        weights = tf.matmul(query, key, transpose_b=True) / math.sqrt(self.head_dim)
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = tf.cast(stable_softmax(tf.cast(weights, tf.float32), axis=-1), query.dtype)
        output = tf.matmul(self.dropout(weights, training=training), value)
        output = tf.reshape(tf.transpose(output, perm=(0, 2, 1, 3)), (batch, length, self.num_heads * self.head_dim))
        return self.o_proj(output), (weights if output_attentions else None), present

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        self.built = True
        for layer in (self.q_proj, self.k_proj, self.v_proj):
            with tf.name_scope(layer.name):
                layer.build((self.hidden_size,))
        with tf.name_scope(self.o_proj.name):
            self.o_proj.build((self.num_heads * self.head_dim,))
        for norm in (self.q_norm, self.k_norm):
            if norm is not None:
                with tf.name_scope(norm.name):
                    norm.build(None)


class TFDecoderLayer(TFMistralDecoderLayer):
    """TFMistral's pre-norm decoder layer (its call and build) around the family's attention and MLP."""

    def __init__(self, config: PretrainedConfig, variant: DecoderVariant, layer_idx: int, **kwargs: Any):
        keras.layers.Layer.__init__(self, **kwargs)  # TFMistralDecoderLayer's own init builds a Mistral attention
        self.hidden_size = config.hidden_size
        self.self_attn = TFDecoderAttention(config, variant, name="self_attn")
        self.mlp = TFDecoderMLP(config, name="mlp")
        self.input_layernorm = TFMistralRMSNorm(config.hidden_size, eps=config.rms_norm_eps, name="input_layernorm")
        self.post_attention_layernorm = TFMistralRMSNorm(config.hidden_size, eps=config.rms_norm_eps,
                                                         name="post_attention_layernorm")


def decoder_main_layer(config_class: type, variant: DecoderVariant) -> type:
    """A main layer (embeddings, decoder layers, final norm) for one family: TFMistralMainLayer's call, masks and
    build over TFDecoderLayers, serialisable with the family's config class."""

    class MainLayer(TFMistralMainLayer):
        def __init__(self, config: PretrainedConfig, **kwargs: Any):
            keras.layers.Layer.__init__(self, **kwargs)  # TFMistralMainLayer's own init builds Mistral layers
            self.config = config
            self.padding_idx = config.pad_token_id
            self.vocab_size = config.vocab_size
            self.hidden_size = config.hidden_size
            self.embed_tokens = keras.layers.Embedding(config.vocab_size, config.hidden_size, name="embed_tokens",
                                                       embeddings_initializer=get_initializer(
                                                           config.initializer_range))
            self.layers = [TFDecoderLayer(config, variant, index, name=f"layers.{index}")
                           for index in range(config.num_hidden_layers)]
            self._attn_implementation = config._attn_implementation
            self.norm = TFMistralRMSNorm(config.hidden_size, eps=config.rms_norm_eps, name="norm")

    MainLayer.config_class = config_class
    MainLayer.__name__ = MainLayer.__qualname__ = f"TF{config_class.__name__[:-len('Config')]}MainLayer"
    return keras_serializable(MainLayer)

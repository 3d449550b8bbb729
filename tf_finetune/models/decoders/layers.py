"""The tf-keras layers of today's decoder-only LLMs (Llama, Qwen2, Qwen3, Gemma 2, Gemma 3), built on transformers'
TF Mistral.

TFMistral computes a Llama-style decoder with the head size fixed to hidden_size / heads, no biases, no q/k norm,
plain RoPE and full attention. These layers lift those limits, each a switch of `DecoderVariant` or a config field
the families set (Gemma's soft-capping, query scale, sliding-window layers and local RoPE base), and reuse the rest
of TFMistral
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
from transformers.activations_tf import get_tf_activation
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
    norm_offset: bool = False  # Gemma: RMSNorm weights are offsets from one, applied in float32
    sandwich_norms: bool = False  # Gemma 2/3: norms on the attention's and the MLP's outputs too
    scaled_embeddings: bool = False  # Gemma: input embeddings times sqrt(hidden_size)

    def rms_norm(self, size: int, eps: float, name: str) -> keras.layers.Layer:
        return (TFOffsetRMSNorm if self.norm_offset else TFMistralRMSNorm)(size, eps=eps, name=name)

    def attention_biases(self, config: PretrainedConfig) -> tuple[bool, bool]:
        """(q/k/v bias, output-projection bias): `attention_bias` sets both where the config has it (Llama, Qwen3)."""
        both = bool(getattr(config, "attention_bias", False))
        return self.qkv_bias or both, both


def head_dim(config: PretrainedConfig) -> int:
    """The attention head size: the config's head_dim where it sets one, else hidden_size / heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def is_sliding(config: PretrainedConfig, layer_idx: int) -> bool:
    """Whether the layer attends to the last `sliding_window` tokens only (Gemma's `layer_types`)."""
    layer_types = getattr(config, "layer_types", None)
    return bool(layer_types) and layer_types[layer_idx] == "sliding_attention" and bool(config.sliding_window)


def rope_inverse_frequencies(config: PretrainedConfig, local: bool = False) -> np.ndarray:
    """RoPE's inverse frequencies, float32, as PyTorch transformers computes them for rope types `default`,
    `linear` and `llama3` (families.py refuses the others before a model is built); with `local`, those of Gemma 3's
    sliding-window layers (their own base, unscaled)."""
    dim = head_dim(config)
    base = config.rope_local_base_freq if local else config.rope_theta
    inverse = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
    scaling = {} if local else getattr(config, "rope_scaling", None) or {}
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


class TFOffsetRMSNorm(TFMistralRMSNorm):
    """Gemma's RMSNorm: `x / rms(x) * (1 + weight)` in float32, the weight starting at zero."""

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        self.weight = self.add_weight(name="weight", shape=self.hidden_size, initializer="zeros")
        self.built = True

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        states = tf.cast(hidden_states, tf.float32)
        states = states * tf.math.rsqrt(tf.reduce_mean(tf.square(states), axis=-1, keepdims=True)
                                        + self.variance_epsilon)
        return tf.cast(states * (1.0 + tf.cast(self.weight, tf.float32)), hidden_states.dtype)


class TFScaledEmbedding(keras.layers.Embedding):
    """Gemma's input embeddings: the looked-up rows times sqrt(hidden_size), in their dtype."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        embeddings = super().call(inputs)
        return embeddings * tf.cast(self.output_dim ** 0.5, embeddings.dtype)


def softcap(values: tf.Tensor, cap: Optional[float]) -> tf.Tensor:
    """Gemma 2's soft-capping `cap * tanh(values / cap)`; `values` unchanged without a cap."""
    return values if not cap else tf.tanh(values / cap) * cap


class TFDecoderRotaryEmbedding(TFMistralRotaryEmbedding):
    """TFMistral's rotary embedding with the family's (possibly scaled, or local) inverse frequencies."""

    def __init__(self, config: PretrainedConfig, local: bool = False, **kwargs: Any):
        super().__init__(head_dim(config), config.max_position_embeddings, config.rope_theta, **kwargs)
        self.inv_freq = tf.constant(rope_inverse_frequencies(config, local))


# transformers' TF activations name PyTorch's tanh-approximated GELU (Gemma's) gelu_new
_TF_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_new"}


class TFDecoderMLP(TFMistralMLP):
    """TFMistral's gated MLP, with biases where the config sets `mlp_bias` (Llama) and Gemma's `hidden_activation`."""

    def __init__(self, config: PretrainedConfig, **kwargs: Any):
        activation = getattr(config, "hidden_activation", None) or config.hidden_act
        keras.layers.Layer.__init__(self, **kwargs)
        self.config, self.hidden_size, self.intermediate_size = config, config.hidden_size, config.intermediate_size
        self.act_fn = get_tf_activation(_TF_ACTIVATIONS.get(activation, activation))
        self.gate_proj = keras.layers.Dense(self.intermediate_size, use_bias=False, name="gate_proj")
        self.up_proj = keras.layers.Dense(self.intermediate_size, use_bias=False, name="up_proj")
        self.down_proj = keras.layers.Dense(self.hidden_size, use_bias=False, name="down_proj")
        if getattr(config, "mlp_bias", False):
            self.gate_proj = keras.layers.Dense(self.intermediate_size, use_bias=True, name="gate_proj")
            self.up_proj = keras.layers.Dense(self.intermediate_size, use_bias=True, name="up_proj")
            self.down_proj = keras.layers.Dense(self.hidden_size, use_bias=True, name="down_proj")


class TFDecoderAttention(keras.layers.Layer):
    """Grouped-query self-attention with RoPE, any head size, optional biases, optional per-head q/k norm, and
    Gemma's query scale, score soft-capping and sliding window. The cache is TFMistral's: a (key, value) pair per
    layer, each (batch, kv heads, length, head size), the whole past kept (the window is a mask)."""

    def __init__(self, config: PretrainedConfig, variant: DecoderVariant, layer_idx: int, **kwargs: Any):
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
        self.q_norm = variant.rms_norm(self.head_dim, config.rms_norm_eps, "q_norm") if variant.qk_norm else None
        self.k_norm = variant.rms_norm(self.head_dim, config.rms_norm_eps, "k_norm") if variant.qk_norm else None
        self.scale = (getattr(config, "query_pre_attn_scalar", None) or self.head_dim) ** -0.5
        self.score_cap = getattr(config, "attn_logit_softcapping", None)
        self.window = config.sliding_window if is_sliding(config, layer_idx) else None
        local = self.window is not None and getattr(config, "rope_local_base_freq", None) is not None  # Gemma 3
        self.rotary_emb = TFDecoderRotaryEmbedding(config, local, name="rotary_emb")
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
        # Scores, mask and softmax in float32 (under mixed precision too), as PyTorch's eager attention's softmax.
        weights = softcap(tf.cast(tf.matmul(query, key, transpose_b=True), tf.float32) * self.scale, self.score_cap)
        if attention_mask is not None:
            weights = weights + attention_mask
        if self.window is not None and attention_mask is not None:
            weights = tf.where(_outside_window(attention_mask, self.window), weights.dtype.min, weights)
        weights = tf.cast(stable_softmax(weights, axis=-1), query.dtype)
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


def _outside_window(attention_mask: tf.Tensor, window: int) -> tf.Tensor:
    """Where a query sees a key more than `window` - 1 tokens before it. The keys a query may see (the additive
    mask's zeros) are consecutive tokens in cache order, so that is where over `window` of them lie at or after the
    key: counted so, it holds for XLA generation's fixed-size cache too, where a key's index is not its place."""
    visible = tf.cast(attention_mask > -1.0, tf.int32)
    return tf.cumsum(visible, axis=-1, reverse=True) > window


class TFDecoderLayer(TFMistralDecoderLayer):
    """TFMistral's pre-norm decoder layer (its call and build) around the family's attention and MLP; with
    `sandwich_norms`, Gemma's, which also normalises the attention's output and both sides of the MLP."""

    def __init__(self, config: PretrainedConfig, variant: DecoderVariant, layer_idx: int, **kwargs: Any):
        keras.layers.Layer.__init__(self, **kwargs)  # TFMistralDecoderLayer's own init builds a Mistral attention
        self.hidden_size = config.hidden_size
        self.sandwich = variant.sandwich_norms
        self.self_attn = TFDecoderAttention(config, variant, layer_idx, name="self_attn")
        self.mlp = TFDecoderMLP(config, name="mlp")
        names = ["input_layernorm", "post_attention_layernorm"] + (
            ["pre_feedforward_layernorm", "post_feedforward_layernorm"] if self.sandwich else [])
        for name in names:
            setattr(self, name, variant.rms_norm(config.hidden_size, config.rms_norm_eps, name))

    gradient_checkpointing = False  # set by the model's gradient_checkpointing_enable()

    def call(self, hidden_states: tf.Tensor, attention_mask: Optional[tf.Tensor] = None,
             position_ids: Optional[tf.Tensor] = None, past_key_value: Optional[tuple[tf.Tensor, tf.Tensor]] = None,
             output_attentions: Optional[bool] = False, use_cache: Optional[bool] = False, training: Any = None,
             **kwargs: Any) -> tuple:
        if self.gradient_checkpointing and training and not use_cache and not output_attentions:
            # Only the layer's input is kept for the backward pass, which runs the layer again to get the rest.
            layer = tf.recompute_grad(lambda states: self._layer(states, attention_mask, position_ids)[0])
            return (layer(hidden_states),)
        return self._layer(hidden_states, attention_mask, position_ids, past_key_value, output_attentions, use_cache)

    def _layer(self, hidden_states: tf.Tensor, attention_mask: Optional[tf.Tensor],
               position_ids: Optional[tf.Tensor], past_key_value: Optional[tuple[tf.Tensor, tf.Tensor]] = None,
               output_attentions: Optional[bool] = False, use_cache: Optional[bool] = False) -> tuple:
        if not self.sandwich:
            return super().call(hidden_states, attention_mask, position_ids, past_key_value, output_attentions,
                                use_cache)
        attended, weights, present = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
            position_ids=position_ids, past_key_value=past_key_value, output_attentions=output_attentions,
            use_cache=use_cache)
        hidden_states = hidden_states + self.post_attention_layernorm(attended)
        hidden_states = hidden_states + self.post_feedforward_layernorm(
            self.mlp(self.pre_feedforward_layernorm(hidden_states)))
        return (hidden_states,) + ((weights,) if output_attentions else ()) + ((present,) if use_cache else ())

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        super().build(input_shape)
        if self.sandwich:
            for norm in (self.pre_feedforward_layernorm, self.post_feedforward_layernorm):
                with tf.name_scope(norm.name):
                    norm.build(None)


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
            embedding = TFScaledEmbedding if variant.scaled_embeddings else keras.layers.Embedding
            self.embed_tokens = embedding(config.vocab_size, config.hidden_size, name="embed_tokens",
                                          embeddings_initializer=get_initializer(config.initializer_range))
            self.layers = [TFDecoderLayer(config, variant, index, name=f"layers.{index}")
                           for index in range(config.num_hidden_layers)]
            self._attn_implementation = config._attn_implementation
            self.norm = variant.rms_norm(config.hidden_size, config.rms_norm_eps, "norm")
            self.gradient_checkpointing = False

        def call(self, input_ids: Optional[tf.Tensor] = None, attention_mask: Optional[tf.Tensor] = None,
                 position_ids: Optional[tf.Tensor] = None, past_key_values: Optional[list] = None,
                 inputs_embeds: Optional[tf.Tensor] = None, use_cache: Optional[bool] = None,
                 output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                 return_dict: Optional[bool] = None, training: Any = None) -> Any:
            if self.gradient_checkpointing and training:
                use_cache = False  # as in PyTorch transformers: layers recomputed in the backward pass keep no cache
            return super().call(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                                output_attentions, output_hidden_states, return_dict)

        def _prepare_decoder_attention_mask(self, attention_mask: Optional[tf.Tensor], input_shape: Any,
                                            inputs_embeds: tf.Tensor, past_key_values_length: int) -> tf.Tensor:
            """TFMistral's additive mask, always in float32: its own fails for another dtype (mixed precision)."""
            return super()._prepare_decoder_attention_mask(attention_mask, input_shape, tf.zeros((), tf.float32),
                                                           past_key_values_length)

    MainLayer.config_class = config_class
    MainLayer.__name__ = MainLayer.__qualname__ = f"TF{config_class.__name__[:-len('Config')]}MainLayer"
    return keras_serializable(MainLayer)

"""Causal-LM and sequence-classification models over a family's decoder main layer: TFMistral's heads (their call,
loss, generation inputs and build) with the output layer tied to the embeddings where the config ties them, and
soft-capped where it caps the logits."""
from __future__ import annotations

from typing import Any, Callable, Optional

import tensorflow as tf
from transformers import PretrainedConfig
from transformers.modeling_tf_utils import TFPreTrainedModel, get_initializer, keras
from transformers.models.mistral.modeling_tf_mistral import (
    TFMistralForCausalLM,
    TFMistralForSequenceClassification,
)

from tf_finetune.models.decoders.layers import softcap


class TFTiedOutput(keras.layers.Layer):
    """Logits from the input embeddings' own matrix (PyTorch's tied lm_head): one variable, trained once and
    exported once, under the embeddings' name; soft-capped where the config says so (Gemma 2)."""

    def __init__(self, embeddings: Callable[[], tf.Variable], cap: Optional[float] = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._embeddings = embeddings  # a function, so Keras does not track the embedding layer twice
        self.cap = cap

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        logits = tf.matmul(hidden_states, tf.cast(self._embeddings(), hidden_states.dtype), transpose_b=True)
        return softcap(logits, self.cap)


class TFCappedOutput(keras.layers.Dense):
    """An untied output layer whose logits are soft-capped (Gemma 2's final_logit_softcapping)."""

    def __init__(self, units: int, cap: float, **kwargs: Any):
        super().__init__(units, **kwargs)
        self.cap = cap

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return softcap(super().call(hidden_states), self.cap)


class GradientCheckpointing:
    """PyTorch transformers' gradient-checkpointing switches, for the families' models (`self.model`: the main
    layer): each decoder layer keeps only its input in training, and runs again in the backward pass."""

    supports_gradient_checkpointing = True

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each decoder layer in the backward pass (less memory, about one more forward pass of compute).
        Refused where a layer draws dropout masks, which the recomputation would draw anew."""
        if self.config.attention_dropout:
            raise ValueError(f"gradient checkpointing recomputes each layer, which would draw new dropout masks; set "
                             f"attention_dropout to 0 (this config has {self.config.attention_dropout}).")
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        """Keep every activation for the backward pass again."""
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.model.gradient_checkpointing

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        self.model.gradient_checkpointing = enabled
        for layer in self.model.layers:
            layer.gradient_checkpointing = enabled


def causal_lm_class(name: str, config_class: type, main_layer: type) -> type:
    """The family's ...ForCausalLM: TFMistralForCausalLM's call over `main_layer`."""

    def __init__(self: Any, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        TFPreTrainedModel.__init__(self, config, *inputs, **kwargs)  # TFMistralForCausalLM's builds a Mistral
        self.config = config
        self.model = main_layer(config, name="model")
        self.vocab_size = config.vocab_size
        cap = getattr(config, "final_logit_softcapping", None)
        if config.tie_word_embeddings:
            self.lm_head = TFTiedOutput(lambda: self.model.embed_tokens.embeddings, cap, name="lm_head")
        else:
            initializer = get_initializer(config.initializer_range)
            self.lm_head = TFCappedOutput(config.vocab_size, cap, use_bias=False, name="lm_head",
                                          kernel_initializer=initializer) if cap else keras.layers.Dense(
                config.vocab_size, use_bias=False, name="lm_head", kernel_initializer=initializer)

    return type(name, (GradientCheckpointing, TFMistralForCausalLM), {
        "__init__": __init__, "config_class": config_class, "base_model_prefix": "model"})


def sequence_classification_class(name: str, config_class: type, main_layer: type) -> type:
    """The family's ...ForSequenceClassification: TFMistral's (the last non-padding token's score)."""

    def __init__(self: Any, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        TFPreTrainedModel.__init__(self, config, *inputs, **kwargs)
        self.config = config
        self.num_labels = config.num_labels
        self.model = main_layer(config, name="model")
        self.score = keras.layers.Dense(self.num_labels, use_bias=False, name="score",
                                        kernel_initializer=get_initializer(config.initializer_range))

    return type(name, (GradientCheckpointing, TFMistralForSequenceClassification), {
        "__init__": __init__, "config_class": config_class, "base_model_prefix": "model"})

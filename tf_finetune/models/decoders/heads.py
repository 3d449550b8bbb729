"""Causal-LM and sequence-classification models over a family's decoder main layer: TFMistral's heads (their call,
loss, generation inputs and build) with the output layer tied to the embeddings where the config ties them."""
from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf
from transformers import PretrainedConfig
from transformers.modeling_tf_utils import TFPreTrainedModel, get_initializer, keras
from transformers.models.mistral.modeling_tf_mistral import (
    TFMistralForCausalLM,
    TFMistralForSequenceClassification,
)


class TFTiedOutput(keras.layers.Layer):
    """Logits from the input embeddings' own matrix (PyTorch's tied lm_head): one variable, trained once and
    exported once, under the embeddings' name."""

    def __init__(self, embeddings: Callable[[], tf.Variable], **kwargs: Any):
        super().__init__(**kwargs)
        self._embeddings = embeddings  # a function, so Keras does not track the embedding layer twice

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return tf.matmul(hidden_states, tf.cast(self._embeddings(), hidden_states.dtype), transpose_b=True)


def causal_lm_class(name: str, config_class: type, main_layer: type) -> type:
    """The family's ...ForCausalLM: TFMistralForCausalLM's call over `main_layer`."""

    def __init__(self: Any, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        TFPreTrainedModel.__init__(self, config, *inputs, **kwargs)  # TFMistralForCausalLM's builds a Mistral
        self.config = config
        self.model = main_layer(config, name="model")
        self.vocab_size = config.vocab_size
        if config.tie_word_embeddings:
            self.lm_head = TFTiedOutput(lambda: self.model.embed_tokens.embeddings, name="lm_head")
        else:
            self.lm_head = keras.layers.Dense(config.vocab_size, use_bias=False, name="lm_head",
                                              kernel_initializer=get_initializer(config.initializer_range))

    return type(name, (TFMistralForCausalLM,), {"__init__": __init__, "config_class": config_class,
                                                "base_model_prefix": "model"})


def sequence_classification_class(name: str, config_class: type, main_layer: type) -> type:
    """The family's ...ForSequenceClassification: TFMistral's (the last non-padding token's score)."""

    def __init__(self: Any, config: PretrainedConfig, *inputs: Any, **kwargs: Any) -> None:
        TFPreTrainedModel.__init__(self, config, *inputs, **kwargs)
        self.config = config
        self.num_labels = config.num_labels
        self.model = main_layer(config, name="model")
        self.score = keras.layers.Dense(self.num_labels, use_bias=False, name="score",
                                        kernel_initializer=get_initializer(config.initializer_range))

    return type(name, (TFMistralForSequenceClassification,), {"__init__": __init__, "config_class": config_class,
                                                              "base_model_prefix": "model"})

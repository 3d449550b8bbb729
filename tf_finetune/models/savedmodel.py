"""A TF SavedModel of a transformers TF model with a `serving_default` signature over token ids, for TF Serving and
`tf.saved_model.load` without transformers."""
from __future__ import annotations

from typing import Any

import tensorflow as tf

SIGNATURE = "serving_default"
_TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def serving_inputs(model: Any, tokenizer: Any) -> dict[str, tf.TensorSpec]:
    """The signature's inputs: the token-id tensors that both the tokenizer produces and the model takes (int32,
    any batch size and length; multiple-choice models take [batch, choices, length])."""
    specs = model.input_signature
    return {name: specs[name] for name in _TOKEN_INPUTS if name in specs and name in tokenizer.model_input_names}


def save_savedmodel(model: Any, tokenizer: Any, directory: str) -> None:
    """Write a SavedModel into `directory` whose serving_default returns the model's output tensors by name
    (logits; start_logits and end_logits for question answering)."""
    inputs = serving_inputs(model, tokenizer)

    @tf.function(input_signature=[inputs])
    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        outputs = model(features, training=False)
        return {name: value for name, value in outputs.items() if isinstance(value, tf.Tensor)}

    module = tf.Module()
    module.model = model  # tracks the variables
    module.serve = serve
    tf.saved_model.save(module, directory, signatures={SIGNATURE: serve.get_concrete_function()})

"""Compiled per-model functions (a forward pass, logits, generation under XLA), cached per model."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np
    from transformers import TFPreTrainedModel

_MODEL_FUNCTIONS: "weakref.WeakKeyDictionary[Any, dict[str, Callable]]" = weakref.WeakKeyDictionary()
# The multiple of tokens that inputs to XLA-compiled functions are padded to: XLA compiles once per input shape.
XLA_PAD_MULTIPLE = 64


def model_function(model: "TFPreTrainedModel", name: str,
                   build: Callable[[Callable[[], "TFPreTrainedModel"]], Callable]) -> Callable:
    """The function `build(model_ref)` makes (e.g. a tf.function over the model), built once per model and name, so
    evaluating every epoch traces once. It gets a weak reference: the cache must not keep the model alive."""
    functions = _MODEL_FUNCTIONS.setdefault(model, {})
    if name not in functions:
        functions[name] = build(weakref.ref(model))
    return functions[name]


def logits_function(model: "TFPreTrainedModel") -> Callable[[dict[str, Any]], "np.ndarray"]:
    """The model's compiled forward pass (inference), returning float32 logits as NumPy; traced once per model."""
    import tensorflow as tf

    def build(model_ref: Callable[[], "TFPreTrainedModel"]) -> Callable:
        return tf.function(lambda features: tf.cast(model_ref()(features, training=False).logits, tf.float32),
                           reduce_retracing=True)

    step = model_function(model, "logits", build)
    return lambda features: step(features).numpy()


def xla_generate(model: "TFPreTrainedModel") -> Callable:
    """The model's `generate` compiled with XLA, once per model (and per input shape and setting): pass it tensors,
    not NumPy arrays."""
    import tensorflow as tf

    def build(model_ref: Callable[[], "TFPreTrainedModel"]) -> Callable:
        return tf.function(lambda **inputs: model_ref().generate(**inputs), jit_compile=True)

    return model_function(model, "xla_generate", build)

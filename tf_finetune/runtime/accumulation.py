"""Gradient accumulation for any Keras model under any tf.distribute strategy.

A training batch holds `steps` micro-batches. The model's own `train_step` runs on each micro-batch in turn, with
its `optimizer.minimize` call caught to collect the gradients instead of applying them; their mean is applied once
per batch. So the optimizer, and its learning-rate schedule, count updates; and no update hides inside a `tf.cond`,
where the all-reduce of mirrored replicas is not allowed. Micro-batches run one after another (control
dependencies), so their activations need not be held at the same time.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import tensorflow as tf
import tf_keras

_CLASSES: dict[type, type] = {}


def accumulate_gradients(model: tf_keras.Model, steps: int) -> tf_keras.Model:
    """Make `model` split each training batch into `steps` micro-batches and apply their mean gradient once.

    The batch size (per replica) must be a multiple of `steps`. The model keeps its class name, so
    `save_pretrained` writes the same `architectures`.
    """
    if steps < 1:
        raise ValueError(f"gradient accumulation steps must be positive, got {steps}")
    base = type(model)
    if not issubclass(base, GradientAccumulationMixin):
        if base not in _CLASSES:
            _CLASSES[base] = type(base.__name__, (GradientAccumulationMixin, base), {"__module__": base.__module__})
        model.__class__ = _CLASSES[base]
    model.gradient_accumulation_steps = steps
    return model


class GradientAccumulationMixin:
    """Runs the model's `train_step` once per micro-batch and applies the mean gradient once per batch."""

    gradient_accumulation_steps: int = 1

    def train_step(self, data: Any) -> dict[str, Any]:
        steps = self.gradient_accumulation_steps
        if steps == 1:
            return super().train_step(data)
        optimizer = self.optimizer
        collector = _GradientCollector(optimizer)
        totals: Optional[list] = None
        logs: dict[str, Any] = {}
        for micro_batch in _split(data, steps):
            # Each micro-batch waits for the previous one's gradients: one micro-batch in memory at a time.
            with tf.control_dependencies(_tensors(totals)), _optimizer_replaced(self, collector):
                logs = super().train_step(micro_batch)
            gradients = collector.gradients
            totals = gradients if totals is None else [_add(a, b) for a, b in zip(totals, gradients)]
        mean = [None if g is None else _scale(g, 1.0 / steps) for g in totals]
        optimizer.apply_gradients(zip(mean, collector.variables))
        return logs


class _GradientCollector:
    """Stands in for the optimizer during one micro-batch: `minimize` computes the gradients (with loss scaling,
    as a LossScaleOptimizer would) and keeps them instead of applying them."""

    def __init__(self, optimizer: tf_keras.optimizers.Optimizer):
        self.optimizer = optimizer
        self.gradients: list = []
        self.variables: list = []

    def minimize(self, loss: tf.Tensor, var_list: Any, grad_loss: Any = None, name: Optional[str] = None,
                 tape: Optional[tf.GradientTape] = None) -> None:
        if tape is None:
            raise ValueError("gradient accumulation needs train_step to pass its GradientTape to minimize()")
        variables = list(var_list() if callable(var_list) else var_list)
        scaled = isinstance(self.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
        if scaled:
            with tape:  # the scaling must be on the tape too
                loss = self.optimizer.get_scaled_loss(loss)
        gradients = tape.gradient(loss, variables, grad_loss)
        self.gradients = self.optimizer.get_unscaled_gradients(gradients) if scaled else gradients
        self.variables = variables

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


@contextlib.contextmanager
def _optimizer_replaced(model: tf_keras.Model, stand_in: _GradientCollector) -> Iterator[None]:
    """Swap `model.optimizer` for the collector while a micro-batch's step is traced, bypassing Keras' attribute
    tracking so checkpoints keep seeing the real optimizer."""
    optimizer = model.optimizer
    object.__setattr__(model, "optimizer", stand_in)
    try:
        yield
    finally:
        object.__setattr__(model, "optimizer", optimizer)


def _split(data: Any, steps: int) -> list[Any]:
    """`steps` micro-batches of equal size from a batch (a nested structure of tensors split on the first axis)."""
    flat = tf.nest.flatten(data)
    pieces = [tf.split(t, steps, axis=0) if t is not None else [None] * steps for t in flat]
    return [tf.nest.pack_sequence_as(data, [piece[i] for piece in pieces]) for i in range(steps)]


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):  # embeddings: stay sparse
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0), tf.concat([a.indices, b.indices], 0),
                                a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def _scale(gradient: Any, factor: float) -> Any:
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * tf.cast(factor, gradient.values.dtype), gradient.indices,
                                gradient.dense_shape)
    return gradient * tf.cast(factor, gradient.dtype)


def _tensors(gradients: Optional[list]) -> list[tf.Tensor]:
    if not gradients:
        return []
    return [g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients if g is not None]

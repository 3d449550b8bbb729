"""The training optimizer: transformers' AdamWeightDecay with its warm-up and linear decay, optionally lazy on
sparse (embedding) gradients."""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
from transformers import create_optimizer
from transformers.optimization_tf import AdamWeightDecay


class LazyAdamWeightDecay(AdamWeightDecay):
    """AdamWeightDecay that updates only the rows a sparse gradient touches (as TF Addons' LazyAdam).

    An embedding's gradient names the rows of the batch's tokens. Plain Adam still rewrites the whole matrix (both
    moment slots and the weights) at every step; this one reads and writes those rows only, so the rows of tokens
    not in the batch keep their moments and weights, weight decay included. Dense gradients are updated as before.
    """

    def _resource_apply_sparse(self, grad: tf.Tensor, var: tf.Variable, indices: tf.Tensor,
                               apply_state: Optional[dict] = None) -> tf.Operation:
        lr_t, _ = self._get_lr(var.device, var.dtype.base_dtype, apply_state)
        coefficients = apply_state[(var.device, var.dtype.base_dtype)]
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_rows = coefficients["beta_1_t"] * tf.gather(m, indices) + coefficients["one_minus_beta_1_t"] * grad
        v_rows = coefficients["beta_2_t"] * tf.gather(v, indices) + coefficients["one_minus_beta_2_t"] * grad * grad
        step = coefficients["lr"] * m_rows / (tf.sqrt(v_rows) + coefficients["epsilon"])
        if self._do_use_weight_decay(var.name):
            step += lr_t * coefficients["weight_decay_rate"] * tf.gather(var, indices)
        return tf.group(m.scatter_update(tf.IndexedSlices(m_rows, indices)),
                        v.scatter_update(tf.IndexedSlices(v_rows, indices)),
                        var.scatter_sub(tf.IndexedSlices(step, indices)))


def build_optimizer(learning_rate: float, total_steps: int, warmup_steps: int, weight_decay: float,
                    epsilon: float, max_grad_norm: float, lazy: bool) -> AdamWeightDecay:
    """transformers' `create_optimizer` (linear warm-up, then linear decay to 0); `lazy` makes it a
    LazyAdamWeightDecay with the same settings. `max_grad_norm` 0 turns clipping off."""
    optimizer, _ = create_optimizer(init_lr=learning_rate, num_train_steps=total_steps, num_warmup_steps=warmup_steps,
                                    weight_decay_rate=weight_decay, adam_epsilon=epsilon,
                                    adam_global_clipnorm=max_grad_norm or None)
    if lazy:  # same state and settings (the weight-decay exclusions are not in get_config), lazy sparse updates
        optimizer.__class__ = LazyAdamWeightDecay
    return optimizer

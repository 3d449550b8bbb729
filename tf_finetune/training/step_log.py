"""The per-step training log: every `logging_steps` optimizer steps, a record `{step, epoch, loss, learning_rate}`
in the run state and in OUTPUT_DIR/log_history.json (per-epoch rows stay in history.json).

- step: the global optimizer step (a batch is one optimizer step, with gradient accumulation too);
- epoch: step / steps per epoch (fractional);
- loss: the mean training loss since the previous record. Keras keeps the epoch's running mean in the `loss` metric
  (a total and a count, reset every epoch); its growth between two records, measured from what it held when each
  epoch's first step began, is the window's, so the mean holds across epoch ends and mid-epoch resumes;
- learning_rate: the rate the schedule gave the record's last step.

The records and the open window live in the RunState, which checkpoints save: a resumed run keeps the records up to
its checkpoint and drops those after it.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import tf_keras

from tf_finetune.core.files import write_json
from tf_finetune.core.layout import LOG_HISTORY_FILE
from tf_finetune.runtime.checkpoints import RunState
from tf_finetune.training.callbacks import loss_metric


class StepLogCallback(tf_keras.callbacks.Callback):
    """Appends a record to `state.log_history` every `logging_steps` optimizer steps and writes log_history.json
    at each epoch's end and at the end of training. `resumed_epoch`: the first epoch goes on from a mid-epoch
    checkpoint, whose loss metric (put back by the checkpoint callback) and window belong together."""

    def __init__(self, state: RunState, output_dir: str, logging_steps: int, steps_per_epoch: int,
                 resumed_epoch: bool = False):
        super().__init__()
        self.state = state
        self.resumed_epoch = resumed_epoch
        self.path = os.path.join(output_dir, LOG_HISTORY_FILE)
        self.logging_steps = logging_steps
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self.epoch_started = False

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.step = int(self.model.optimizer.iterations.numpy())  # counted from here on: no read per batch
        self.state.log_history = [record for record in self.state.log_history if record["step"] <= self.step]
        if self.state.log_window is None:
            self.state.log_window = [0.0, 0.0, 0.0, 0.0]

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.epoch_started = False

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        if not self.epoch_started:
            if not self.resumed_epoch:  # the reset loss metric as the epoch starts: what the window grows from
                self.state.log_window[2:] = list(loss_totals(self.model))
            self.epoch_started, self.resumed_epoch = True, False

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self.step += 1
        if self.step % self.logging_steps:
            return
        window = self._absorb()
        if window[1] > 0:
            self.state.log_history.append({"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                                           "loss": window[0] / window[1],
                                           "learning_rate": learning_rate_at(self.model.optimizer, self.step - 1)})
        window[:2] = [0.0, 0.0]

    def _absorb(self) -> list[float]:
        """Move the loss metric's growth since the last look into the open window; returns the window."""
        total, count = loss_totals(self.model)
        window = self.state.log_window
        window[0] += total - window[2]
        window[1] += count - window[3]
        window[2:] = [total, count]
        return window

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._absorb()  # the epoch's last steps belong to the next record's window
        write_json(self.path, self.state.log_history)

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        write_json(self.path, self.state.log_history)


def loss_totals(model: tf_keras.Model) -> tuple[float, float]:
    """The epoch's summed training loss and its weight so far (the `loss` Mean metric's total and count)."""
    metric = loss_metric(model)
    return float(metric.total.numpy()), float(metric.count.numpy())


def learning_rate_at(optimizer: Any, step: int) -> float:
    """The learning rate of the optimizer's schedule at a (0-based) step; a constant rate as it is."""
    rate = optimizer.learning_rate
    if callable(rate):  # a LearningRateSchedule (transformers' WarmUp and linear decay)
        return float(rate(step))
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)

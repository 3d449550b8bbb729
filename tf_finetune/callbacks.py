"""Keras (tf-keras) callbacks of a run, in their order:
metrics -> best model / early stop -> history -> checkpoint -> Hub push.

Each callback reads what the earlier ones wrote into `logs` and into the shared `RunState`, which is what a
resumed run starts from.
"""
from __future__ import annotations

import csv
import glob
import io
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import tensorflow as tf
import tf_keras

from tf_finetune.errors import UserError
from tf_finetune.outputs import read_json, write_atomic, write_json, write_text

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
# Legacy HDF5 weights (by layer name), not tf-keras' `.weights.h5` format: that one also stores the metrics' state,
# and loading it into a model with several replicas fails (on-read variables cannot take an h5py dataset).
# One file per best epoch (best_model-epoch3.h5): the run state names the current one, so a kill between saving the
# weights and saving the state never leaves weights that the state does not describe.
BEST_WEIGHTS_PATTERN = "best_model-epoch{epoch}.h5"


@dataclass
class RunState:
    """Progress of a run, saved with every checkpoint: finished epochs, their logs, and the best epoch so far."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    checkpoint_path: Optional[str] = None
    best_weights_file: Optional[str] = None

    def save(self, checkpoint_dir: str) -> None:
        """Write the state atomically into checkpoint_dir."""
        write_json(os.path.join(checkpoint_dir, STATE_FILE), asdict(self))

    @classmethod
    def load(cls, checkpoint_dir: str) -> Optional["RunState"]:
        """The saved state, or None when the folder holds none."""
        path = os.path.join(checkpoint_dir, STATE_FILE)
        return cls(**read_json(path)) if os.path.isfile(path) else None


class EvaluationCallback(tf_keras.callbacks.Callback):
    """Adds the task's validation results (`eval_loss`, `eval_<metric>`) to the epoch's logs."""

    def __init__(self, evaluate: Callable[[], dict[str, float]]):
        super().__init__()
        self.evaluate = evaluate

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is not None:
            logs.update(self.evaluate())


class BestModelCallback(tf_keras.callbacks.Callback):
    """Saves the weights of the best epoch by `monitor`, stops after `patience` epochs without improvement, and
    (with `restore`) puts the best weights back when training ends."""

    def __init__(self, state: RunState, monitor: str, greater_is_better: bool, weights_dir: str,
                 patience: Optional[int] = None, restore: bool = True):
        super().__init__()
        self.state = state
        self.monitor = monitor
        self.greater_is_better = greater_is_better
        self.weights_dir = weights_dir
        self.patience = patience
        self.restore = restore

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise UserError(f"metric_for_best_model {self.monitor!r} is not among the epoch's results "
                            f"({', '.join(sorted(logs))}); pass one of them to --metric_for_best_model.")
        value = float(logs[self.monitor])
        if self._improves(value):
            name = BEST_WEIGHTS_PATTERN.format(epoch=epoch + 1)
            write_atomic(os.path.join(self.weights_dir, name), self.model.save_weights)
            self.state.best_metric, self.state.best_epoch, self.state.best_weights_file = value, epoch + 1, name
            self.state.epochs_without_improvement = 0
        else:
            self.state.epochs_without_improvement += 1
            if self.patience is not None and self.state.epochs_without_improvement >= self.patience:
                logger.info("Early stopping: %s has not improved for %d epochs.", self.monitor, self.patience)
                self.state.stopped_early = True
                self.model.stop_training = True

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        if self.restore and restore_best_weights(self.model, self.weights_dir, self.state):
            logger.info("Restored the weights of epoch %s (%s = %.4f).", self.state.best_epoch, self.monitor,
                        self.state.best_metric)

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        best = self.state.best_metric
        return best is None or (value > best if self.greater_is_better else value < best)


class HistoryCallback(tf_keras.callbacks.Callback):
    """Appends each epoch's logs to the run state and writes history.json and history.csv atomically."""

    def __init__(self, state: RunState, output_dir: str):
        super().__init__()
        self.state = state
        self.output_dir = output_dir

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        row = {"epoch": epoch + 1, **{key: _plain(value) for key, value in (logs or {}).items()}}
        self.state.history = [r for r in self.state.history if r["epoch"] != row["epoch"]] + [row]
        write_history(self.output_dir, self.state.history)


class CheckpointCallback(tf_keras.callbacks.Callback):
    """Saves model and optimizer after every epoch (tf.train.CheckpointManager) and then the run state."""

    def __init__(self, state: RunState, checkpoint_dir: str, checkpoint: tf.train.Checkpoint):
        super().__init__()
        self.state = state
        self.checkpoint_dir = checkpoint_dir
        self.manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=2)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.state.epoch = epoch + 1
        self.state.checkpoint_path = self.manager.save(checkpoint_number=epoch + 1)
        self.state.save(self.checkpoint_dir)
        for stale in glob.glob(os.path.join(self.checkpoint_dir, BEST_WEIGHTS_PATTERN.format(epoch="*"))):
            if os.path.basename(stale) != self.state.best_weights_file:
                os.remove(stale)


def restore_best_weights(model: tf_keras.Model, weights_dir: str, state: RunState) -> bool:
    """Load the weights of the state's best epoch, if they were saved; return whether they were."""
    path = os.path.join(weights_dir, state.best_weights_file or "")
    if not state.best_weights_file or not os.path.isfile(path):
        return False
    model.load_weights(path)
    return True


class HubPushCallback(tf_keras.callbacks.Callback):
    """After each epoch: save the model into output_dir and queue a background upload (hub_strategy "epoch")."""

    def __init__(self, save: Callable[[], None], uploader: Any):
        super().__init__()
        self.save = save
        self.uploader = uploader

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.save()
        self.uploader.push(f"Training in progress, epoch {epoch + 1}")


def write_history(output_dir: str, history: list[dict[str, Any]]) -> None:
    """history.json and history.csv, one row per epoch."""
    write_json(os.path.join(output_dir, "history.json"), history)
    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_text(os.path.join(output_dir, "history.csv"), buffer.getvalue())


def _plain(value: Any) -> Any:
    """A Python number for a log value (Keras logs may hold NumPy or tensor scalars)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value

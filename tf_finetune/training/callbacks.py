"""Keras (tf-keras) callbacks of a run; tf_finetune.training.callback_list puts them in their order.

Each callback reads what the earlier ones wrote into `logs` and into the shared `RunState`, which is what a
resumed run starts from.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import tensorflow as tf
import tf_keras

from tf_finetune.core.errors import SIGNAL_EXIT_CODES, TrainingInterrupted, UserError
from tf_finetune.core.files import write_atomic, write_csv, write_json
from tf_finetune.core.layout import HISTORY_CSV_FILE, HISTORY_FILE
from tf_finetune.runtime.checkpoints import RunState, prune_checkpoints, write_checkpoint

logger = logging.getLogger(__name__)

# Legacy HDF5 weights (by layer name), not tf-keras' `.weights.h5` format: that one also stores the metrics' state,
# and loading it into a model with several replicas fails (on-read variables cannot take an h5py dataset).
# One file per best epoch (best_model-epoch3.h5): the run state names the current one, so a kill between saving the
# weights and saving the state never leaves weights that the state does not describe.
BEST_WEIGHTS_PATTERN = "best_model-epoch{epoch}.h5"


class EvaluationCallback(tf_keras.callbacks.Callback):
    """Adds the task's validation results (`eval_loss`, `eval_<metric>`) to the epoch's logs (`evaluate` gets the
    epoch, counted from 0)."""

    def __init__(self, evaluate: Callable[[int], dict[str, float]]):
        super().__init__()
        self.evaluate = evaluate

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is not None:
            logs.update(self.evaluate(epoch))


class BestModelCallback(tf_keras.callbacks.Callback):
    """Tracks the best epoch by `monitor`, stops after `patience` epochs without improvement, and saves the best
    epoch's weights into `weights_dir` (None: no weights, as in a search trial); with `restore`, puts them back
    when training ends.

    It removes its own weights files: an earlier best's when the next epoch begins (by then the epoch that beat it
    has written its checkpoint, which names the newer file), and, unless `keep_at_end` (a checkpointed run, whose
    resume restores the best weights from it), the last one when training ends."""

    def __init__(self, state: RunState, monitor: str, greater_is_better: bool, weights_dir: Optional[str],
                 patience: Optional[int] = None, restore: bool = True, keep_at_end: bool = False):
        super().__init__()
        self.state = state
        self.monitor = monitor
        self.greater_is_better = greater_is_better
        self.weights_dir = weights_dir
        self.patience = patience
        self.restore = restore and weights_dir is not None
        self.keep_at_end = keep_at_end

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._remove_weights_files(keep=self.state.best_weights_file)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise UserError(f"metric_for_best_model {self.monitor!r} is not among the epoch's results "
                            f"({', '.join(sorted(logs))}); pass one of them to --metric_for_best_model.")
        value = float(logs[self.monitor])
        if self._improves(value):
            name = None
            if self.weights_dir is not None:
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
        if not self.keep_at_end:  # restored, or not wanted: the state stops naming the file that goes now
            self.state.best_weights_file = None
        self._remove_weights_files(keep=self.state.best_weights_file)

    def _remove_weights_files(self, keep: Optional[str]) -> None:
        """Remove the best-weights files in weights_dir but `keep` (also those a killed run left unrecorded)."""
        if self.weights_dir is None:
            return
        for path in glob.glob(os.path.join(self.weights_dir, BEST_WEIGHTS_PATTERN.format(epoch="*"))):
            if os.path.basename(path) != keep:
                os.remove(path)

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
    """Counts epochs and optimizer steps into the run state and, with `save`, writes checkpoints (see
    tf_finetune.runtime.checkpoints): after every epoch, every `save_steps` steps when given, and, with `save_on_signal`, when
    SIGTERM or SIGINT arrives (the step in progress finishes, a checkpoint is written, then TrainingInterrupted stops
    the run). Keeps the newest `total_limit` checkpoints. `batch_offset`: batches of the first epoch trained before
    (a resumed epoch)."""

    def __init__(self, state: RunState, checkpoint_dir: str, checkpoint: tf.train.Checkpoint, save: bool,
                 save_steps: Optional[int], total_limit: Optional[int], save_on_signal: bool, batch_offset: int = 0):
        super().__init__()
        self.state, self.checkpoint_dir, self.checkpoint = state, checkpoint_dir, checkpoint
        self.save_epochs, self.save_steps, self.total_limit = save, save_steps, total_limit
        self.save_on_signal = save and save_on_signal
        self.batch_offset = batch_offset
        self.signal: Optional[int] = None
        self._handlers: dict[int, Any] = {}

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        if self.save_on_signal and threading.current_thread() is threading.main_thread():
            self._handlers = {signum: signal.signal(signum, self._on_signal) for signum in SIGNAL_EXIT_CODES}

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        self.restore_signal_handlers()
        if self.signal is not None:  # it came after the last epoch's checkpoint
            raise TrainingInterrupted(self.signal, self.state.checkpoint_path)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers training replaced (fit calls on_train_end only when it ends normally)."""
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal = signum
        signal.signal(signum, self._handlers.get(signum, signal.SIG_DFL))  # a second signal stops at once
        logger.warning("%s: finishing the current step and writing a checkpoint (send it again to stop at once).",
                       signal.Signals(signum).name)

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        if self.batch_offset and self.state.metric_values:  # a resumed epoch: its mean loss goes on as it was
            for variable, value in zip(loss_metric(self.model).variables, self.state.metric_values):
                variable.assign(value)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self.state.global_step += 1
        self.state.step_in_epoch = self.batch_offset + batch + 1
        if batch + 1 == self.params.get("steps"):
            return  # the epoch's last step: the epoch's end (evaluation, then a checkpoint) comes next
        if self.save_steps and self.state.global_step % self.save_steps == 0:
            self.save()
        if self.signal is not None:
            path = self.state.checkpoint_path if self._saved_now() else self.save()
            raise TrainingInterrupted(self.signal, path)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.state.epoch, self.state.step_in_epoch, self.batch_offset = epoch + 1, 0, 0
        if not self.save_epochs:
            return
        self.save()
        if self.signal is not None:
            raise TrainingInterrupted(self.signal, self.state.checkpoint_path)

    def save(self) -> str:
        """Write a checkpoint of the current state and prune old ones; returns its folder. Weights that are no longer
        finite (a NaN gradient at this step) are never saved: the run stops, naming the last good checkpoint."""
        if not all(bool(tf.reduce_all(tf.math.is_finite(weight))) for weight in self.model.trainable_weights):
            raise UserError(f"the weights became NaN or infinite at step {self.state.global_step} (a NaN or infinite "
                            f"gradient); training stopped. The last good checkpoint is "
                            f"{self.state.checkpoint_path or 'none yet'}: lower --learning_rate (or raise "
                            "--warmup_steps, check --max_grad_norm) and run again.")
        self.state.metric_values = [variable.numpy().tolist() for variable in loss_metric(self.model).variables]
        self.state.checkpoint_path = write_checkpoint(self.checkpoint_dir, self.checkpoint, self.state)
        prune_checkpoints(self.checkpoint_dir, self.total_limit)
        return self.state.checkpoint_path

    def _saved_now(self) -> bool:
        return bool(self.state.checkpoint_path) and self.state.checkpoint_path.endswith(
            f"checkpoint-{self.state.global_step}")


class DivergenceGuard(tf_keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite (a NaN gradient makes the next loss NaN),
    naming the step and the last checkpoint, which holds finite weights and is kept."""

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            last = self.state.checkpoint_path or "none yet"
            step = self.state.global_step + 1  # the checkpoint callback, after this one, counts the step
            raise UserError(f"the training loss became {float(loss)} at step {step} (epoch "
                            f"{self.state.epoch + 1}); training stopped. The last good checkpoint is {last}: lower "
                            "--learning_rate (or raise --warmup_steps, check --max_grad_norm) and run again.")


def restore_best_weights(model: tf_keras.Model, weights_dir: str, state: RunState) -> bool:
    """Load the weights of the state's best epoch, if they were saved; return whether they were."""
    path = os.path.join(weights_dir, state.best_weights_file or "")
    if not state.best_weights_file or not os.path.isfile(path):
        return False
    model.load_weights(path)
    return True


class ProgressLines(tf_keras.callbacks.Callback):
    """Training progress as whole lines, for output that is not a terminal (a log file, CI, a notebook cell): one each
    time another 1/`parts` of the epoch is done or `seconds` have passed, and one per epoch with its results.
    `batch_offset`: batches of the first epoch trained before (a resumed epoch)."""

    def __init__(self, parts: int = 10, seconds: float = 30.0, batch_offset: int = 0):
        super().__init__()
        self.parts, self.seconds, self.batch_offset = parts, seconds, batch_offset
        self._epoch = self._part = 0
        self._epoch_start = self._last_line = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._epoch, self._part = epoch, self.batch_offset * self.parts // self._total()
        self._epoch_start = self._last_line = time.perf_counter()

    def _total(self) -> int:
        return max((self.params.get("steps") or 0) + self.batch_offset, 1)

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        total, done, now = self._total(), batch + 1 + self.batch_offset, time.perf_counter()
        part = done * self.parts // total
        if done >= total or (part <= self._part and now - self._last_line < self.seconds):
            return
        self._part, self._last_line = part, now
        elapsed = now - self._epoch_start
        left = elapsed / (done - self.batch_offset) * (total - done)
        logger.info("epoch %d/%d  step %d/%d (%d%%)  loss %.4f  %s elapsed, %s left", self._epoch + 1,
                    self.params.get("epochs", 0), done, total, 100 * done // total, float((logs or {}).get("loss", 0)),
                    _duration(elapsed), _duration(left))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        results = ", ".join(f"{key} {float(value):.4f}" for key, value in (logs or {}).items() if _is_number(value))
        logger.info("epoch %d/%d done in %s: %s", epoch + 1, self.params.get("epochs", 0),
                    _duration(time.perf_counter() - self._epoch_start), results)
        self.batch_offset = 0


def _lines_for_the_bar(verbose: int) -> bool:
    """Whether Keras' progress bar (verbose 1) would redraw itself in a file rather than a terminal."""
    return verbose == 1 and not sys.stdout.isatty()


def progress_callbacks(verbose: int, batch_offset: int = 0) -> list[tf_keras.callbacks.Callback]:
    """ProgressLines where Keras' progress bar would redraw itself in a file rather than a terminal."""
    return [ProgressLines(batch_offset=batch_offset)] if _lines_for_the_bar(verbose) else []


def keras_verbosity(verbose: int) -> int:
    """The `verbose` for Keras' fit: none where progress_callbacks stands in for its progress bar."""
    return 0 if _lines_for_the_bar(verbose) else verbose


class HubPushCallback(tf_keras.callbacks.Callback):
    """After each epoch: save the model into output_dir and queue a background upload (hub_strategy "epoch")."""

    def __init__(self, save: Callable[[], None], uploader: Any):
        super().__init__()
        self.save = save
        self.uploader = uploader

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.save()
        self.uploader.push(f"Training in progress, epoch {epoch + 1}")


def loss_metric(model: tf_keras.Model) -> tf_keras.metrics.Mean:
    """The compiled model's `loss` metric: the running mean of the epoch's training loss (total and count). Taken from
    the loss container, where it exists from `compile` on: `model.metrics` lists it only after the first training
    step, too late to put a resumed epoch's totals back."""
    return model.compiled_loss._total_loss_mean


def write_history(output_dir: str, history: list[dict[str, Any]]) -> None:
    """history.json and history.csv, one row per epoch."""
    write_json(os.path.join(output_dir, HISTORY_FILE), history)
    write_csv(os.path.join(output_dir, HISTORY_CSV_FILE), history)


def _duration(seconds: float) -> str:
    """12.3s, 4m05s or 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _plain(value: Any) -> Any:
    """A Python number for a log value (Keras logs may hold NumPy or tensor scalars)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value

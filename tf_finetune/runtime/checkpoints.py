"""Training checkpoints: one folder per save, `checkpoint/checkpoint-<global step>/`, written whole or not at all.

A checkpoint holds the model, the optimizer (Adam's slots and its iteration count, which positions the learning-rate
schedule) and TensorFlow's random generators (`model.*`, a tf.train.Checkpoint), and `trainer_state.json`: the
RunState (finished epochs, batches done in the current epoch, global step, history, best metric) with NumPy's and
Python's random states. Together with the data order, a function of (seed, epoch), that is everything a resumed run
needs to continue exactly where the killed one stopped.

It is written into a temporary folder, every file fsynced, `manifest.json` (size and SHA-256 of each file) last, then
renamed into place in one step. A folder without a valid manifest (a copy cut short, a disk error) is skipped with a
warning and the previous checkpoint is used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
WEIGHTS_PREFIX = "model"
_FOLDER = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class RunState:
    """Progress of a run, saved in every checkpoint: finished epochs and their logs, the position inside the current
    epoch, the best epoch so far, and the NumPy and Python random states at the save."""

    epoch: int = 0  # finished epochs
    step_in_epoch: int = 0  # optimizer steps (batches) done in epoch `epoch`
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: Optional[float] = None
    best_epoch: Optional[int] = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    checkpoint_path: Optional[str] = None  # the checkpoint folder this state was read from
    best_weights_file: Optional[str] = None
    random_states: Optional[dict[str, Any]] = None
    metric_values: Optional[list] = None  # the loss metric's running total and count (the epoch's mean loss) at the save
    log_history: list[dict[str, float]] = field(default_factory=list)  # the per-step log (tf_finetune.training.step_log)
    log_window: Optional[list[float]] = None  # its open window: loss total and count since the last record, and the
    # epoch's loss total and count seen so far


def write_checkpoint(checkpoint_dir: str, checkpoint: tf.train.Checkpoint, state: RunState) -> str:
    """Write `checkpoint-<global step>` atomically (see the module's docstring); returns its path. A failed write
    (full disk, unwritable folder) leaves earlier checkpoints as they were and raises a one-line UserError."""
    final = os.path.join(checkpoint_dir, f"checkpoint-{state.global_step}")
    staging = None
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
        staging = tempfile.mkdtemp(dir=checkpoint_dir, prefix=f".tmp-checkpoint-{state.global_step}-")
        checkpoint.write(os.path.join(staging, WEIGHTS_PREFIX))
        state.random_states = _random_states()
        _write_synced(os.path.join(staging, STATE_FILE), json.dumps(asdict(state), indent=2))
        files = {name: _digest(os.path.join(staging, name)) for name in sorted(os.listdir(staging))}
        for name in files:
            _fsync(os.path.join(staging, name))
        _write_synced(os.path.join(staging, MANIFEST_FILE), json.dumps(files, indent=2))
        if os.path.isdir(final):  # saved again at the same step (a resumed run's first save)
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync(checkpoint_dir)
    except (OSError, tf.errors.OpError) as error:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
        raise UserError(f"{reason.splitlines()[0].lower()} writing checkpoint {final}; the earlier checkpoints "
                        "are intact: free space or fix the folder's permissions, then run the same command again "
                        "to resume.") from error
    return final


def checkpoint_folders(checkpoint_dir: str) -> list[str]:
    """The checkpoint folders in checkpoint_dir, newest (largest global step) first, valid or not."""
    if not os.path.isdir(checkpoint_dir):
        return []
    steps = [(int(match.group(1)), name) for name in os.listdir(checkpoint_dir) if (match := _FOLDER.match(name))]
    return [os.path.join(checkpoint_dir, name) for _, name in sorted(steps, reverse=True)]


def latest_checkpoint(checkpoint_dir: str) -> Optional[str]:
    """The newest checkpoint whose manifest checks out; invalid ones are skipped with a warning."""
    for folder in checkpoint_folders(checkpoint_dir):
        problem = invalid_reason(folder)
        if problem is None:
            return folder
        logger.warning("Ignoring checkpoint %s: %s; using the one before it.", folder, problem)
    return None


def invalid_reason(folder: str) -> Optional[str]:
    """Why a checkpoint folder cannot be used (None: it is whole)."""
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isfile(path):
        return "it has no manifest (its write did not finish)"
    try:
        files = read_json(path)
    except ValueError:
        return "its manifest is damaged"
    for name, (size, digest) in files.items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file) or os.path.getsize(file) != size or _digest(file)[1] != digest:
            return f"{name} is missing or differs from the manifest"
    return None


def read_checkpoint_state(folder: str, checked: bool = False) -> RunState:
    """The RunState saved in a checkpoint folder, its path recorded in it (`checked`: its manifest was checked)."""
    if not os.path.isdir(folder):
        raise UserError(f"checkpoint {folder} does not exist; pass a folder output_dir/checkpoint/checkpoint-N to "
                        "--resume_from_checkpoint.")
    problem = None if checked else invalid_reason(folder)
    if problem:
        raise UserError(f"checkpoint {folder} cannot be used: {problem}; pass another --resume_from_checkpoint.")
    state = RunState(**read_json(os.path.join(folder, STATE_FILE)))
    state.checkpoint_path = folder
    return state


def restore_checkpoint(checkpoint: tf.train.Checkpoint, state: RunState) -> None:
    """Put the model, optimizer, TF generators and the NumPy and Python random states back as they were saved."""
    try:
        checkpoint.read(os.path.join(state.checkpoint_path, WEIGHTS_PREFIX)).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise UserError(f"checkpoint {state.checkpoint_path} does not fit this model "
                        f"({str(error).strip().splitlines()[0][:200]}); it was written by another model or settings: "
                        "pass --overwrite_output_dir or another --output_dir.") from error
    if state.random_states:
        np.random.set_state(tuple(state.random_states["numpy"]))
        random.setstate((state.random_states["python"][0], tuple(state.random_states["python"][1]),
                         state.random_states["python"][2]))


def discard_after(checkpoint_dir: str, step: int) -> None:
    """Remove checkpoint folders past `step`: what a resume from an earlier checkpoint leaves behind would otherwise
    be taken for the newest."""
    for folder in checkpoint_folders(checkpoint_dir):
        if int(folder.rsplit("-", 1)[1]) > step:
            shutil.rmtree(folder, ignore_errors=True)


def prune_checkpoints(checkpoint_dir: str, keep: Optional[int]) -> None:
    """Remove all but the newest `keep` checkpoint folders (None: keep all), and leftovers of unfinished writes."""
    for folder in checkpoint_folders(checkpoint_dir)[keep:] if keep else []:
        shutil.rmtree(folder, ignore_errors=True)
    for name in os.listdir(checkpoint_dir):
        if name.startswith(".tmp-checkpoint-"):
            shutil.rmtree(os.path.join(checkpoint_dir, name), ignore_errors=True)


def dropout_generators(model: Any) -> list[tf.random.Generator]:
    """The tf.random.Generator of every random layer (dropout) of a model, created now rather than at the first
    training step, so a checkpoint can save and restore them (tf-keras leaves them out of the model's checkpoint).
    Needs tf_keras.backend.experimental.enable_tf_random_generator() before the model is built."""
    generators = []
    for layer in model._flatten_layers(include_self=False):
        random_generator = getattr(layer, "_random_generator", None)
        if random_generator is not None:
            random_generator._maybe_init()
            if random_generator._generator is not None:
                generators.append(random_generator._generator)
    return generators


def _random_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"numpy": [kind, keys.tolist(), position, has_gauss, cached], "python": [version, list(internal), gauss]}


def _digest(path: str) -> tuple[int, str]:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            sha.update(block)
    return os.path.getsize(path), sha.hexdigest()


def _write_synced(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write(text + "\n")
        file.flush()
        os.fsync(file.fileno())


def _fsync(path: str) -> None:
    """Flush a file or a folder's entries to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

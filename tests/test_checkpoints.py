"""Checkpoint folders: written whole or not at all, damaged ones skipped, a full disk leaves the earlier ones intact,
and the divergence guard stops at a NaN loss naming the last good checkpoint."""
from __future__ import annotations

import errno
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from conftest import write_sentiment_files
from tf_finetune.runtime.checkpoints import (RunState, discard_after, latest_checkpoint, read_checkpoint_state,
                                             write_checkpoint)
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.training import train


def _checkpoint() -> tf.train.Checkpoint:
    return tf.train.Checkpoint(weights=tf.Variable(np.arange(6, dtype=np.float32)))


def test_a_checkpoint_with_a_damaged_file_is_skipped_for_the_one_before(tmp_path, caplog):
    older = write_checkpoint(str(tmp_path), _checkpoint(), RunState(global_step=10))
    newer = write_checkpoint(str(tmp_path), _checkpoint(), RunState(global_step=20, epoch=1))
    assert latest_checkpoint(str(tmp_path)) == newer and read_checkpoint_state(newer).epoch == 1
    data = next(name for name in os.listdir(newer) if name.startswith("model.data"))
    with open(os.path.join(newer, data), "r+b") as file:
        file.write(b"\x00\x01\x02")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(str(tmp_path)) == older
    assert "differs from the manifest; using the one before it" in caplog.text
    os.remove(os.path.join(older, "manifest.json"))  # as if the write had stopped before its manifest
    assert latest_checkpoint(str(tmp_path)) is None


def test_resuming_from_an_earlier_checkpoint_discards_the_later_ones(tmp_path):
    for step in (10, 20, 30):
        write_checkpoint(str(tmp_path), _checkpoint(), RunState(global_step=step))
    discard_after(str(tmp_path), 20)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-20"]


def test_a_full_disk_leaves_the_earlier_checkpoint_intact(tmp_path, monkeypatch):
    earlier = write_checkpoint(str(tmp_path), _checkpoint(), RunState(global_step=10))
    checkpoint = _checkpoint()

    def full_disk(prefix: str) -> str:
        with open(prefix + ".partial", "wb") as file:
            file.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "write", full_disk)
    with pytest.raises(UserError, match=r"^no space left on device writing checkpoint .*checkpoint-20; the earlier "
                                        r"checkpoints are intact"):
        write_checkpoint(str(tmp_path), checkpoint, RunState(global_step=20))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10"]
    assert latest_checkpoint(str(tmp_path)) == earlier


def test_a_nan_loss_stops_training_and_names_the_last_good_checkpoint(tiny_bert, tmp_path):
    class PoisonAtStep(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 4:  # the 5th step: weights NaN from here on, so step 6's loss is NaN
                weight = self.model.trainable_weights[0]
                weight.assign(tf.fill(weight.shape, np.nan))

    paths = write_sentiment_files(tmp_path, {"train": 64, "valid": 16})
    config = TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], output_dir=str(tmp_path / "out"), num_train_epochs=1,
                         per_device_train_batch_size=4, save_strategy="steps", save_steps=2, verbose=0)
    with pytest.raises(UserError, match=r"the training loss became nan at step 6 \(epoch 1\); training stopped\. The "
                                        r"last good checkpoint is .*checkpoint-4"):
        train(config, extra_callbacks=[PoisonAtStep()])
    checkpoint = latest_checkpoint(str(tmp_path / "out" / "checkpoint"))
    assert checkpoint.endswith("checkpoint-4")

"""The training workflow: learning, outputs, best-model restore, early stopping, resume after a crash, seeds."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tf_keras
from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

from conftest import sentiment_rows, write_csv, write_sentiment_files
from tf_finetune.runtime.checkpoints import RunState, latest_checkpoint, read_checkpoint_state
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.training import FineTuneRun, train


@pytest.fixture()
def config(tiny_bert, tmp_path) -> TrainConfig:
    paths = write_sentiment_files(tmp_path, {"train": 128, "valid": 32})
    return TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                       validation_file=paths["valid"], output_dir=str(tmp_path / "out"), num_train_epochs=3,
                       per_device_train_batch_size=8, learning_rate=3e-3, verbose=0)


def latest_state(output_dir: str) -> RunState:
    """The run state in the newest valid checkpoint of a run."""
    return read_checkpoint_state(latest_checkpoint(os.path.join(output_dir, "checkpoint")))


class CrashAfterEpoch(tf_keras.callbacks.Callback):
    """Simulates a kill right after an epoch's checkpoint was written."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_learns_and_writes_every_output(config, tmp_path):
    results = train(config.replace(num_train_epochs=6))
    out = tmp_path / "out"
    assert results["eval_accuracy"] >= 0.9, results
    assert {"train_runtime", "train_samples_per_second", "eval_loss", "epoch"} <= set(results)
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6] and "eval_accuracy" in history[0]
    assert (out / "history.csv").read_text().splitlines()[0].startswith("epoch,loss")
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["learning_rate"] == 3e-3 and "hub_token" not in saved
    assert not [p for p in out.rglob(".tmp*")]
    card = (out / "README.md").read_text()
    assert "model-index" in card and f"value: {results['eval_accuracy']}" in card
    model = TFAutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(tokenizer(["the film was very superb", "the plot was very awful"], return_tensors="tf")).logits
    assert [model.config.id2label[int(i)] for i in logits.numpy().argmax(-1)] == ["positive", "negative"]


def test_best_epoch_is_restored_before_saving(config):
    # Monitor eval_loss the wrong way round, so the best epoch is an early one and not the last.
    results = train(config.replace(metric_for_best_model="eval_loss", greater_is_better=True))
    history = {row["epoch"]: row for row in json.loads(open(f"{config.output_dir}/history.json").read())}
    best = max(history, key=lambda epoch: history[epoch]["eval_loss"])
    assert results["best_epoch"] == best < 3
    assert results["eval_loss"] == pytest.approx(history[best]["eval_loss"], rel=1e-5)


def test_early_stopping(config):
    results = train(config.replace(num_train_epochs=5, metric_for_best_model="eval_loss", greater_is_better=True,
                                   early_stopping_patience=1))
    state = latest_state(config.output_dir)
    assert state.stopped_early and results["epoch"] == state.epoch < 5


def test_resumes_after_a_crash_without_repeating_epochs(config, caplog):
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[CrashAfterEpoch(2)])
    assert latest_state(config.output_dir).epoch == 2
    caplog.set_level(logging.INFO)
    epochs_run = []

    class CountEpochs(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch + 1)

    results = train(config, extra_callbacks=[CountEpochs()])
    assert epochs_run == [3] and results["epoch"] == 3
    assert "checkpoint-32: epoch 3 of 3, 0 of its 16 steps done" in caplog.text
    history = json.loads(open(f"{config.output_dir}/history.json").read())
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_each_epoch_trains_on_its_own_length_grouped_order_also_after_a_resume(config, monkeypatch):
    import tf_finetune.data.batching as batching

    epochs_ordered = []
    original = batching.length_grouped_batches

    def record(lengths, batch_size, window, seed, epoch):
        epochs_ordered.append(epoch)
        return original(lengths, batch_size, window, seed, epoch)

    monkeypatch.setattr(batching, "length_grouped_batches", record)
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[CrashAfterEpoch(2)])
    assert epochs_ordered == [0, 1]
    epochs_ordered.clear()
    train(config)
    assert epochs_ordered == [2]  # the batches epoch 3 of an uninterrupted run would see


def test_evaluation_runs_longest_first_and_scores_as_the_split_in_its_own_order(config):
    from tf_finetune.data.batching import example_lengths
    from tf_finetune.training.run import model_columns

    rows = [(f"{sentence}{' and very good' * (i % 4)}", label) for i, (sentence, label) in enumerate(sentiment_rows(24))]
    run = FineTuneRun(config.replace(validation_file=write_csv(Path(config.output_dir).parent / "mixed.csv", rows)))
    original = run.task.tokenize(run.task.load_raw_datasets(run.config), run.preprocessor, run.config)["validation"]
    assert not (np.diff(example_lengths(original.features)) <= 0).all()  # the file's order is not the sorted one
    in_order = run.model.prepare_tf_dataset(model_columns(run.model, original.features), batch_size=8, shuffle=False,
                                            collate_fn=run.task.collator(run.preprocessor, run.config, training=False))
    expected = run.task.evaluate(run.model, in_order, original, run.config, run.context)
    assert run.evaluate() == pytest.approx(expected, rel=1e-5)



def test_test_predictions_run_longest_first_and_come_back_in_the_files_order(config):
    from tf_finetune.training.run import model_columns

    rows = [(f"{sentence}{' and very good' * (i % 4)}", label) for i, (sentence, label) in enumerate(sentiment_rows(24))]
    test_file = write_csv(Path(config.output_dir).parent / "test.csv", rows)
    run = FineTuneRun(config.replace(test_file=test_file, do_predict=True))
    split = run.splits["test"]
    in_order = run.model.prepare_tf_dataset(model_columns(run.model, split.features), batch_size=8, shuffle=False,
                                            collate_fn=run.task.collator(run.preprocessor, run.config, training=False))
    logits = run.model.predict(in_order, verbose=0).logits
    expected = [run.model.config.id2label[int(i)] for i in np.argmax(logits, -1)]
    assert len(set(expected)) == 2  # both labels occur, so a wrong order shows
    assert run.predict() == expected

def test_resume_restores_the_optimizer_step(config):
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[CrashAfterEpoch(1)])
    steps = []

    class RecordStep(tf_keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            steps.append(int(self.model.optimizer.iterations.numpy()))

    train(config, extra_callbacks=[RecordStep()])
    assert steps == [128 // 8]


def test_same_seed_same_result(config, tmp_path):
    first = train(config.replace(num_train_epochs=1, output_dir=str(tmp_path / "a")))
    second = train(config.replace(num_train_epochs=1, output_dir=str(tmp_path / "b")))
    assert first["eval_loss"] == pytest.approx(second["eval_loss"], rel=1e-6)


def test_notebook_api_step_by_step(config):
    run = FineTuneRun(config.replace(num_train_epochs=1))
    run.compile()
    history = run.model.fit(run.train_dataset, epochs=1, callbacks=run.callbacks(), verbose=0)
    assert "eval_accuracy" in history.history and run.steps_per_epoch == 128 // 8
    assert set(run.evaluate()) >= {"eval_loss", "eval_accuracy"}


def test_input_pipelines_run_without_the_autotuning_thread(config):
    """Deleting an iterator waits for tf.data's autotuning thread, which stalled fit at epoch ends."""
    run = FineTuneRun(config)
    assert not run.train_dataset.options().autotune.enabled
    assert not run.eval_dataset.options().autotune.enabled


def test_tokenised_splits_are_cached_between_runs(config):
    first = FineTuneRun(config).splits["train"].features.cache_files[0]["filename"]
    written = os.path.getmtime(first)
    second = FineTuneRun(config).splits["train"].features.cache_files[0]["filename"]
    assert second == first and os.path.getmtime(second) == written


def test_outputs_get_the_usual_file_permissions(tmp_path):
    from tf_finetune.core.files import write_json

    umask = os.umask(0o022)
    try:
        write_json(str(tmp_path / "results.json"), {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644


def test_resuming_with_other_settings_is_refused(config):
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[CrashAfterEpoch(1)])
    with pytest.raises(UserError, match="interrupted run with other settings \\(learning_rate"):
        train(config.replace(learning_rate=1e-4))
    assert train(config.replace(verbose=2))["epoch"] == 3  # a setting that does not change training may differ


def test_only_the_best_epochs_weights_are_kept(config):
    train(config)
    state = latest_state(config.output_dir)
    kept = sorted(p.name for p in Path(config.output_dir, "checkpoint").glob("best_model-epoch*.h5"))
    assert kept == [state.best_weights_file] == [f"best_model-epoch{state.best_epoch}.h5"]

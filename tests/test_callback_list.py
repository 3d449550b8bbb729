"""The callbacks a run trains with: their order for train, notebooks and search trials, and the best-model callback's
early stopping and weights files."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tf_keras

from conftest import write_sentiment_files
from tf_finetune.config import TrainConfig
from tf_finetune.training import FineTuneRun, train
from tf_finetune.tuning import tune


@pytest.fixture()
def config(tiny_bert, tmp_path) -> TrainConfig:
    paths = write_sentiment_files(tmp_path, {"train": 32, "valid": 16})
    return TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                       validation_file=paths["valid"], output_dir=str(tmp_path / "out"), num_train_epochs=3,
                       per_device_train_batch_size=8, learning_rate=3e-3, verbose=0, report_to=["none"])


def best_weights_files(config: TrainConfig) -> list[str]:
    return sorted(path.name for path in Path(config.output_dir, "checkpoint").glob("best_model-epoch*.h5"))


def scores(monkeypatch, accuracies: list[float]) -> None:
    """Make FineTuneRun.evaluate give these accuracies, one per epoch (a constant loss)."""
    values = iter(accuracies)
    monkeypatch.setattr(FineTuneRun, "evaluate", lambda self, epoch=None: {"eval_loss": 0.5, "eval_accuracy": next(values)})


class RecordBestWeights(tf_keras.callbacks.Callback):
    """The best-weights files at each epoch's begin and end, and the first weight at each epoch's end."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config
        self.files: list[tuple[str, int, list[str]]] = []
        self.weights: list[np.ndarray] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.files.append(("begin", epoch + 1, best_weights_files(self.config)))

    def on_epoch_end(self, epoch, logs=None):
        self.files.append(("end", epoch + 1, best_weights_files(self.config)))
        self.weights.append(self.model.trainable_weights[0].numpy().copy())


def test_best_model_callback_removes_its_weights_files_in_a_notebook_loop(config, monkeypatch):
    scores(monkeypatch, [0.5, 0.7, 0.6, 0.5])  # best: epoch 2 of the first run, epoch 1 of the second
    run = FineTuneRun(config)
    run.compile()
    record = RecordBestWeights(config)
    run.model.fit(run.train_dataset, epochs=3, callbacks=[*run.callbacks(), record], verbose=0)
    one, two = "best_model-epoch1.h5", "best_model-epoch2.h5"
    assert record.files == [("begin", 1, []), ("end", 1, [one]), ("begin", 2, [one]), ("end", 2, [one, two]),
                            ("begin", 3, [two]), ("end", 3, [two])]  # an older best goes once the next epoch begins
    np.testing.assert_array_equal(run.model.trainable_weights[0].numpy(), record.weights[1])  # epoch 2's, restored
    assert best_weights_files(config) == []
    again = FineTuneRun(config.replace(num_train_epochs=1))  # the notebook's next run, in the same folder
    again.compile()
    again.model.fit(again.train_dataset, epochs=1, callbacks=again.callbacks(), verbose=0)
    assert best_weights_files(config) == []


class Stop(BaseException):
    """Ends a run at its first fit, once the fit's callbacks are recorded (nothing catches it on the way out)."""


class TaskCallback(tf_keras.callbacks.Callback):
    """Stands in for a task's own callbacks (chat's generation samples)."""


class Extra(tf_keras.callbacks.Callback):
    """A callback passed to train."""


def record_fit_callbacks(monkeypatch) -> list[list[tf_keras.callbacks.Callback]]:
    """The callbacks of every model.fit from now on; the first fit ends with Stop."""
    fits: list[list[tf_keras.callbacks.Callback]] = []

    def fit(self, *args, callbacks=None, **kwargs):
        fits.append(list(callbacks))
        raise Stop

    monkeypatch.setattr(tf_keras.Model, "fit", fit)
    return fits


@pytest.fixture()
def task_callback(monkeypatch):
    from tf_finetune.tasks import get_task

    monkeypatch.setattr(type(get_task("text-classification")), "training_callbacks",
                        lambda self, *args, **kwargs: [TaskCallback()])


def names(callbacks: list[tf_keras.callbacks.Callback]) -> list[str]:
    return [type(callback).__name__ for callback in callbacks]


# The documented order: metrics -> best model / early stop -> history -> the task's own -> divergence guard ->
# per-step log -> trackers -> checkpoint -> progress lines -> Hub push (a trial's oracle report right after metrics).
NOTEBOOK = ["EvaluationCallback", "BestModelCallback", "HistoryCallback", "TaskCallback", "DivergenceGuard",
            "StepLogCallback", "TrackerCallback"]


def test_callback_order_of_the_command_line_run(config, task_callback, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # progress lines stand in for Keras' bar
    monkeypatch.setattr("tf_finetune.training.pipeline._hub_uploader",
                        lambda config: SimpleNamespace(repo_id="user/out", push=lambda message: None))
    fits = record_fit_callbacks(monkeypatch)
    with pytest.raises(Stop):
        train(config.replace(report_to=["tensorboard"], verbose=1, push_to_hub=True, hub_strategy="epoch"),
              extra_callbacks=[Extra()])
    assert names(fits[0]) == [*NOTEBOOK, "CheckpointCallback", "ProgressLines", "HubPushCallback", "Extra"]
    best = fits[0][1]
    assert (best.monitor, best.restore, best.keep_at_end) == ("eval_accuracy", True, True)


def test_callback_order_of_a_notebook_run(config, task_callback, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    run = FineTuneRun(config.replace(report_to=["tensorboard"], verbose=1))
    assert names(run.callbacks()) == [*NOTEBOOK, "ProgressLines"]
    best = run.callbacks()[1]
    assert (best.monitor, best.restore, best.keep_at_end) == ("eval_accuracy", True, False)


def search_config(config: TrainConfig, tmp_path: Path, epochs: int = 1, **overrides) -> TrainConfig:
    """A one-trial search of `epochs` epochs whose objective is eval_loss (the run's own monitor: eval_accuracy)."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"type": "fixed", "value": 1e-3},
                                 "num_train_epochs": {"type": "fixed", "value": epochs}}))
    return config.replace(tune="random", max_trials=1, tune_space=str(space), tune_retrain=False,
                          tune_objective="eval_loss", **overrides)


def test_callback_order_of_a_search_trial(config, task_callback, monkeypatch, tmp_path):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    fits = record_fit_callbacks(monkeypatch)
    with pytest.raises(Stop):
        tune(search_config(config, tmp_path, report_to=["tensorboard"], verbose=1, early_stopping_patience=2))
    assert names(fits[0]) == ["EvaluationCallback", "ReportCallback", "BestModelCallback", "StepLogCallback",
                              "TrackerCallback", "ProgressLines"]  # no EarlyStopping: the best-model callback's
    best = fits[0][2]
    assert (best.monitor, best.greater_is_better, best.patience, best.weights_dir, best.restore) == (
        "eval_loss", False, 2, None, False)  # it watches the objective and keeps no weights


def test_a_trial_stops_early_through_the_best_model_callback_on_its_objective(config, tmp_path, monkeypatch, caplog):
    accuracies = iter([0.5, 0.6, 0.7])  # the run's monitor improves, the search's objective does not
    monkeypatch.setattr(FineTuneRun, "evaluate", lambda self, epoch=None: {"eval_loss": 0.5, "eval_accuracy": next(accuracies)})
    with caplog.at_level(logging.INFO, logger="tf_finetune.training.callbacks"):
        tune(search_config(config, tmp_path, epochs=3, early_stopping_patience=1))
    trial = json.loads(Path(config.output_dir, "tuning_results.json").read_text())["trials"][0]
    assert trial["num_train_epochs"] == 3 and len(trial["history"]) == 2
    assert "Early stopping: eval_loss has not improved for 1 epochs." in caplog.text

"""Experiment trackers and the per-step log: what each tracker recorded, read back with the tracker's own API."""
from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest
import tf_keras

from conftest import write_sentiment_files
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.training.trackers import resolve_report_to, wandb_mode
from tf_finetune.training import FineTuneRun, train

STEPS_PER_EPOCH = 96 // 8


@pytest.fixture()
def config(tiny_bert, tmp_path) -> TrainConfig:
    paths = write_sentiment_files(tmp_path, {"train": 96, "valid": 16})
    return TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                       validation_file=paths["valid"], output_dir=str(tmp_path / "out"), num_train_epochs=2,
                       per_device_train_batch_size=8, learning_rate=3e-3, verbose=0, logging_steps=4,
                       report_to=["none"])


def read_log(output_dir: str) -> list[dict]:
    return json.loads(Path(output_dir, "log_history.json").read_text())


def event_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's own reader: {tag: [(step, value), ...]} of the event files in one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(folder, size_guidance={"tensors": 0})
    accumulator.Reload()
    tags = [tag for tag in accumulator.Tags()["tensors"]
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"]  # not the HParams plugin's
    return {tag: [(event.step, float(tf_value(event.tensor_proto))) for event in accumulator.Tensors(tag)]
            for tag in tags}


def tf_value(proto) -> float:
    import tensorflow as tf

    return tf.make_ndarray(proto).item()


def hparams_of(folder: str) -> dict:
    """The HParams plugin's session start info written in a run folder (TensorBoard's own parser)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    accumulator = EventAccumulator(folder, size_guidance={"tensors": 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    info = metadata.parse_session_start_info_plugin_data(content)
    return {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in info.hparams.items()}


def test_the_per_step_log_holds_window_means_and_the_schedule(config):
    train(config)
    records, history = read_log(config.output_dir), json.loads(Path(config.output_dir, "history.json").read_text())
    assert [r["step"] for r in records] == [4, 8, 12, 16, 20, 24]
    assert [r["epoch"] for r in records] == [round(s / STEPS_PER_EPOCH, 4) for s in (4, 8, 12, 16, 20, 24)]
    for epoch, row in enumerate(history):  # equal batches: an epoch's loss is the mean of its three windows
        windows = [r["loss"] for r in records[3 * epoch:3 * epoch + 3]]
        assert sum(windows) / 3 == pytest.approx(row["loss"], rel=1e-5)
    total = 2 * STEPS_PER_EPOCH  # linear decay from 3e-3 to 0, no warm-up: the rate of each record's last step
    assert [r["learning_rate"] for r in records] == pytest.approx([3e-3 * (1 - (s - 1) / total)
                                                                   for s in (4, 8, 12, 16, 20, 24)], rel=1e-5)


def test_a_resumed_run_keeps_the_log_of_the_uninterrupted_one(config, tmp_path):
    # Windows of 5 steps cross checkpoints (every 3 steps) and the epoch end (12 steps).
    config = config.replace(logging_steps=5, save_strategy="steps", save_steps=3)
    train(config.replace(output_dir=str(tmp_path / "whole")))
    expected = read_log(str(tmp_path / "whole"))

    class KillAtStep(tf_keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 19:  # records at 5, 10, 15; checkpoint at 18
                # (mid-epoch): the record at 20 averages steps 16-20, three of them trained before the kill
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[KillAtStep()])
    train(config)
    resumed = read_log(config.output_dir)
    assert [r["step"] for r in resumed] == [r["step"] for r in expected] == [5, 10, 15, 20]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in expected], rel=1e-5)
    epochs = [json.loads((path / "history.json").read_text()) for path in (tmp_path / "whole", tmp_path / "out")]
    assert [row["loss"] for row in epochs[1]] == pytest.approx([row["loss"] for row in epochs[0]], rel=1e-5)


def test_tensorboard_records_steps_epochs_hparams_and_results(config):
    results = train(config.replace(report_to=["tensorboard"]))
    runs = os.path.join(config.output_dir, "runs")
    train_scalars, eval_scalars = event_scalars(os.path.join(runs, "train")), event_scalars(os.path.join(runs, "eval"))
    records = read_log(config.output_dir)
    assert train_scalars["loss"] == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in records]
    assert [step for step, _ in train_scalars["learning_rate"]] == [4, 8, 12, 16, 20, 24]
    assert [step for step, _ in train_scalars["epoch_loss"]] == [12, 24]
    assert [step for step, _ in eval_scalars["accuracy"]] == [12, 24]
    session = event_scalars(runs)
    assert session["eval_accuracy"] == [(24, pytest.approx(results["eval_accuracy"]))]
    hparams = hparams_of(runs)
    assert hparams["learning_rate"] == pytest.approx(3e-3) and hparams["per_device_train_batch_size"] == 8
    assert "output_dir" not in hparams  # not a hyperparameter


def test_mlflow_records_params_metrics_and_the_model(config, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'tf-finetune[trackers]')")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = train(config.replace(report_to=["mlflow"]))
    uri = "file:" + os.path.abspath(os.path.join(config.output_dir, "mlruns"))
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tf-finetune"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED" and run["params.learning_rate"] == "0.003"
    assert run["metrics.eval_accuracy"] == pytest.approx(results["eval_accuracy"])
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    losses = client.get_metric_history(run["run_id"], "loss")
    assert [(m.step, m.value) for m in losses] == [(r["step"], pytest.approx(r["loss"]))
                                                   for r in read_log(config.output_dir)]
    artefacts = {a.path for a in client.list_artifacts(run["run_id"], "model")}
    assert {"model/config.json", "model/tf_model.h5", "model/all_results.json"} <= artefacts
    assert not {"model/checkpoint", "model/mlruns", "model/runs"} & artefacts


def test_wandb_records_offline_config_history_and_summary(config, monkeypatch, tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'tf-finetune[trackers]')")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no saved login: offline, nothing leaves the machine
    results = train(config.replace(report_to=["wandb"]))
    folders = glob.glob(os.path.join(config.output_dir, "wandb", "offline-run-*"))
    assert len(folders) == 1
    lines = subprocess.run(["wandb", "leet", "inspect", "--json", folders[0]], capture_output=True, text=True,
                           check=True, timeout=120).stdout.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    config_update = next(r["run"]["config"]["update"] for r in records if r["type"] == "run")
    assert config_update["learning_rate"] == 3e-3 and config_update["logging_steps"] == 4
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    losses = [(row["_step"], row["loss"]) for row in history if "loss" in row]
    assert losses == [(r["step"], pytest.approx(r["loss"])) for r in read_log(config.output_dir)]
    assert any("eval_accuracy" in row for row in history)
    summary = {}
    for record in records:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    assert summary["eval_accuracy"] == pytest.approx(results["eval_accuracy"])


def test_wandb_goes_online_only_when_logged_in(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password abc\n")
    (tmp_path / "netrc").chmod(0o600)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_a_search_writes_one_hparams_run_per_trial(config):
    from tf_finetune.tuning import tune

    space = Path(config.output_dir).parent / "space.json"
    space.write_text(json.dumps({"learning_rate": {"type": "choice", "values": [1e-3, 3e-3]}}))
    tune(config.replace(tune="random", max_trials=2, num_train_epochs=1, tune_space=str(space),
                        tune_retrain=False, report_to=["tensorboard"]))
    trials = sorted(glob.glob(os.path.join(config.output_dir, "runs", "trial_*")))
    assert len(trials) == 2
    assert sorted(hparams_of(trial)["learning_rate"] for trial in trials) == pytest.approx([1e-3, 3e-3])
    assert all("eval_accuracy" in event_scalars(trial) for trial in trials)


def test_report_to_errors_are_one_line_before_training(config, monkeypatch):
    with pytest.raises(UserError, match="--report_to none cannot go with other trackers"):
        resolve_report_to(["none", "tensorboard"])
    with pytest.raises(UserError, match="report_to must be one of .*did you mean 'tensorboard'"):
        config.replace(report_to=["tensorbord"]).validate()
    monkeypatch.setattr("tf_finetune.training.trackers.installed", lambda name: name != "mlflow")
    with pytest.raises(UserError, match="pip install mlflow-skinny"):
        FineTuneRun(config.replace(report_to=["mlflow"]))
    assert resolve_report_to(["all"]) == ["tensorboard", "wandb"]


def test_tensorboard_is_the_default_tracker():
    assert TrainConfig().report_to == ["tensorboard"]
    assert TrainConfig(report_to="mlflow").report_to == ["mlflow"]  # a config file's single name


def test_callbacks_come_in_their_documented_order(config):
    run = FineTuneRun(config.replace(report_to=["tensorboard"]))
    run.compile()
    names = [type(callback).__name__ for callback in run.callbacks(checkpoint=True)]
    assert names == ["EvaluationCallback", "BestModelCallback", "HistoryCallback", "DivergenceGuard",
                     "StepLogCallback", "TrackerCallback", "CheckpointCallback"]
    assert "TrackerCallback" not in [type(c).__name__ for c in FineTuneRun(config).callbacks()]  # report_to none

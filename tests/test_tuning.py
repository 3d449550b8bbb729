"""Hyperparameter search: each tuner kind, resuming interrupted searches, retraining the best values, bad spaces."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import command_error, sentiment_rows, write_csv
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.train import main
from tf_finetune.training import FineTuneRun
from tf_finetune.tuning.tuner import FineTuneTuner, ReportCallback
from tf_finetune.tuning.oracles import RandomSearchOracle
from tf_finetune.tuning import tune

# A small space: two learning rates the tiny model tells apart, one or two epochs, and weight decay, a float (the
# Gaussian process proposes NumPy floats for those).
SPACE = {"learning_rate": {"type": "choice", "values": [1e-5, 5e-3]},
         "per_device_train_batch_size": {"type": "fixed", "value": 8},
         "num_train_epochs": {"type": "int", "min_value": 1, "max_value": 2},
         "weight_decay": {"type": "float", "min_value": 0.0, "max_value": 0.1}}



def write_space(path: Path, space: dict) -> str:
    path.write_text(json.dumps(space))
    return str(path)


def tune_config(tiny_bert: Path, tmp_path: Path, space: dict = SPACE, **overrides) -> TrainConfig:
    """A search on 32 training and 16 validation sentences with the tiny BERT."""
    values = dict(task="text-classification", model_name_or_path=str(tiny_bert), output_dir=str(tmp_path / "out"),
                  train_file=write_csv(tmp_path / "train.csv", sentiment_rows(32), header=("sentence", "label")),
                  validation_file=write_csv(tmp_path / "valid.csv", sentiment_rows(16, seed=1), header=("sentence", "label")),
                  tune_space=write_space(tmp_path / "space.json", space), tune="random", max_trials=2,
                  tune_retrain=False, verbose=0)
    return TrainConfig(**{**values, **overrides})


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def trial_state(config: TrainConfig, trial_id: str) -> dict:
    return read_json(Path(config.output_dir) / "tuning" / f"trial_{trial_id}" / "trial.json")


def record_trials(monkeypatch) -> list[str]:
    """Trial ids that FineTuneTuner.run_trial runs from now on."""
    ran: list[str] = []
    original = FineTuneTuner.run_trial

    def run_trial(self, trial, *args, **kwargs):
        ran.append(trial.trial_id)
        return original(self, trial, *args, **kwargs)

    monkeypatch.setattr(FineTuneTuner, "run_trial", run_trial)
    return ran


@pytest.mark.parametrize("kind, max_trials, overrides", [
    ("random", 2, {"tune_train_fraction": 0.5}),
    ("bayesian", 3, {}),  # 2 random points, then one from the Gaussian process
    ("hyperband", 4, {"tune_objective": "eval_loss"}),  # 3 one-epoch trials, then the best of them for 3 epochs
])
def test_each_tuner_kind_runs_trials_and_returns_the_best(tiny_bert, tmp_path, kind, max_trials, overrides):
    space = SPACE if kind != "hyperband" else {  # Hyperband's budget: 3 epochs; more than 3 distinct values
        **SPACE, "num_train_epochs": {"type": "int", "min_value": 1, "max_value": 3},
        "learning_rate": {"type": "float", "min_value": 1e-4, "max_value": 1e-2}}
    tuner, best = tune(tune_config(tiny_bert, tmp_path, space=space, tune=kind, max_trials=max_trials, **overrides))

    results = read_json(tmp_path / "out" / "tuning_results.json")
    trials = results["trials"]
    assert len(trials) == max_trials and all(t["status"] == "COMPLETED" for t in trials)
    scores = [t["score"] for t in trials]
    greater = kind != "hyperband"
    assert results["direction"] == ("max" if greater else "min")
    assert scores == sorted(scores, reverse=greater)
    assert best == results["best_hyperparameters"] == {k: trials[0][k] for k in best}
    assert set(best) == {"learning_rate", "per_device_train_batch_size", "num_train_epochs", "weight_decay"}
    for trial in trials:  # one report to the oracle per epoch
        assert len(trial["history"]) == trial["num_train_epochs"]
        assert trial["score"] == (max if greater else min)(trial["history"])
    with open(tmp_path / "out" / "tuning_results.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["trial_id"] for row in rows] == [t["trial_id"] for t in trials]
    assert not (tmp_path / "out" / "all_results.json").exists()  # tune_retrain off
    if kind == "random":
        assert results["train_samples"] == 16
        assert tuner.trial_config(tuner.oracle.get_trial("0")).max_train_samples == 16
    if kind == "hyperband":
        continued = [t for t in tuner.oracle.trials.values() if "tuner/trial_id" in t.hyperparameters.values]
        assert len(continued) == 1 and continued[0].hyperparameters.values["tuner/epochs"] == 3
        assert sorted(t["num_train_epochs"] for t in trials) == [1, 1, 1, 3]


def test_interrupted_search_resumes_and_retrains_the_best(tiny_bert, tmp_path, monkeypatch):
    space = {**SPACE, "num_train_epochs": {"type": "fixed", "value": 2}}
    config = tune_config(tiny_bert, tmp_path, space=space, max_trials=1)
    tune(config)
    first_trial = trial_state(config, "0")

    # Extend the search to two trials and interrupt the second one after its first epoch.
    with monkeypatch.context() as patch:
        report = ReportCallback.on_epoch_end

        def interrupt(self, epoch, logs=None):
            report(self, epoch, logs)
            if self.trial_id == "1":
                raise KeyboardInterrupt

        patch.setattr(ReportCallback, "on_epoch_end", interrupt)
        with pytest.raises(KeyboardInterrupt):
            tune(config.replace(max_trials=2))
    half_done = trial_state(config, "1")
    assert half_done["status"] == "RUNNING" and len(half_done["metrics"]["metrics"]["eval_accuracy"][
        "observations"]) == 1

    ran = record_trials(monkeypatch)
    assert main(["--task", "text-classification", "--model_name_or_path", config.model_name_or_path,
                 "--train_file", config.train_file, "--validation_file", config.validation_file,
                 "--output_dir", config.output_dir, "--tune", "random", "--max_trials", "2",
                 "--tune_space", config.tune_space, "--verbose", "0"]) == 0
    assert ran == ["1"]  # the finished trial is kept, the cut-off one runs again from scratch
    assert trial_state(config, "0") == first_trial
    observations = trial_state(config, "1")["metrics"]["metrics"]["eval_accuracy"]["observations"]
    assert [len(o["value"]) for o in observations] == [1, 1]

    best = read_json(tmp_path / "out" / "tuning_results.json")["best_hyperparameters"]
    assert read_json(tmp_path / "out" / "all_results.json")["best_hyperparameters"] == best
    run_config = read_json(tmp_path / "out" / "run_config.json")
    assert {name: run_config[name] for name in best} == best
    assert (tmp_path / "out" / "tf_model.h5").is_file()

    with pytest.raises(UserError, match="other settings.*tune"):
        tune(config.replace(tune="bayesian", overwrite_output_dir=False, tune_retrain=False))


def test_killed_search_resumes_without_repeating_finished_trials(tiny_bert, tmp_path, monkeypatch):
    config = tune_config(tiny_bert, tmp_path)
    argv = ["--task", "text-classification", "--model_name_or_path", config.model_name_or_path,
            "--train_file", config.train_file, "--validation_file", config.validation_file,
            "--output_dir", config.output_dir, "--tune", "random", "--max_trials", "2",
            "--tune_space", config.tune_space, "--tune_retrain", "false", "--verbose", "0"]
    process = subprocess.Popen([sys.executable, "-m", "tf_finetune.train", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = Path(config.output_dir) / "tuning" / "trial_0" / "trial.json"
    deadline = time.monotonic() + 120
    try:
        while not (first.is_file() and read_json(first)["status"] == "COMPLETED"):
            assert process.poll() is None and time.monotonic() < deadline, "the search ended before it was killed"
            time.sleep(0.2)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    first_trial = read_json(first)

    ran = record_trials(monkeypatch)
    assert main(argv) == 0
    assert ran == ["1"]
    assert read_json(first) == first_trial
    results = read_json(tmp_path / "out" / "tuning_results.json")
    assert sorted(t["trial_id"] for t in results["trials"]) == ["0", "1"]


def test_a_trial_finished_just_before_a_kill_is_not_run_again(tiny_bert, tmp_path, monkeypatch):
    """The kill comes after the trial's file says COMPLETED, before the oracle and the tuner saved their state."""
    config = tune_config(tiny_bert, tmp_path, space={**SPACE, "num_train_epochs": {"type": "fixed", "value": 1}})
    with monkeypatch.context() as patch:
        save_trial = RandomSearchOracle._save_trial

        def kill_when_finished(self, trial):
            save_trial(self, trial)
            if trial.status == "COMPLETED":
                raise KeyboardInterrupt

        patch.setattr(RandomSearchOracle, "_save_trial", kill_when_finished)
        with pytest.raises(KeyboardInterrupt):
            tune(config)
    ran = record_trials(monkeypatch)
    tune(config)
    assert ran == ["1"]


def test_trials_stop_early_without_improvement(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setattr(FineTuneRun, "evaluate", lambda self, epoch=None: {"eval_loss": 0.5, "eval_accuracy": 0.5})
    space = {**SPACE, "num_train_epochs": {"type": "fixed", "value": 3}}
    tune(tune_config(tiny_bert, tmp_path, space=space, max_trials=1, early_stopping_patience=1))
    trial = read_json(tmp_path / "out" / "tuning_results.json")["trials"][0]
    assert trial["num_train_epochs"] == 3 and len(trial["history"]) == 2


def test_unknown_objective_ends_the_search(tiny_bert, tmp_path):
    space = {**SPACE, "num_train_epochs": {"type": "fixed", "value": 1}}
    with pytest.raises(UserError, match="'eval_bleu' is not among the epoch's results"):
        tune(tune_config(tiny_bert, tmp_path, space=space, max_trials=2, tune_objective="bleu"))


def test_failed_trials_are_listed_with_their_error(tiny_bert, tmp_path, monkeypatch):
    def broken_compile(self):
        raise RuntimeError("optimizer exploded")

    monkeypatch.setattr(FineTuneRun, "compile", broken_compile)
    with pytest.raises(UserError, match="no trial of the search completed"):
        tune(tune_config(tiny_bert, tmp_path))
    trials = read_json(tmp_path / "out" / "tuning_results.json")["trials"]
    assert [(t["status"], t["score"], t["error"]) for t in trials] == [
        ("FAILED", None, "RuntimeError: optimizer exploded")] * 2


@pytest.mark.parametrize("name, content, message", [
    ("typo.json", {"learning_rat": {"type": "float", "min_value": 1e-5, "max_value": 1e-4}},
     "unknown option 'learning_rat'; did you mean 'learning_rate'"),
    ("untunable.json", {"output_dir": {"type": "fixed", "value": "x"}}, "'output_dir' cannot be tuned"),
    ("kind.json", {"learning_rate": {"type": "uniform", "min_value": 1e-5, "max_value": 1e-4}},
     "'type' is one of float, int, choice, boolean, fixed"),
    ("log.json", {"learning_rate": {"type": "float", "min_value": 0, "max_value": 1e-4, "sampling": "log"}},
     "sampling='log' does not support negative values"),
    ("extra.json", {"learning_rate": {"type": "float", "min_value": 1e-5, "max_value": 1e-4, "step_size": 2}},
     "unexpected keyword argument 'step_size'"),
    ("types.json", {"per_device_train_batch_size": {"type": "choice", "values": [8.5, 16.5]}}, "takes int values"),
    ("range.yaml", "warmup_ratio:\n  type: float\n  min_value: 0.0\n  max_value: 1.5\n",
     r"'warmup_ratio' can take 1.5, which is invalid: --warmup_ratio must be in \[0, 1\)"),
    ("broken.yaml", "learning_rate: [1e-5\n", "is not valid YAML"),
    ("empty.json", {}, "must map option names to specs"),
    ("missing.json", None, "does not exist"),
])
def test_bad_search_space_fails_before_any_trial(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    config = TrainConfig(task="text-classification", output_dir=str(tmp_path / "out"), tune="bayesian",
                         tune_space=str(path))
    with pytest.raises(UserError, match=message):
        tune(config)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_bad_search_space_in_one_line(tmp_path, capsys):
    space = write_space(tmp_path / "space.json", {"learning_rate": {"type": "boolean"}})
    assert main(["--task", "sst2", "--output_dir", str(tmp_path / "out"), "--tune", "random",
                 "--tune_space", space]) == 2
    error = command_error(capsys.readouterr().err)
    assert error.startswith("error: search space")


def test_search_needs_training_and_evaluation(tmp_path):
    with pytest.raises(UserError, match="a search trains and evaluates every trial"):
        tune(TrainConfig(task="sst2", output_dir=str(tmp_path / "out"), tune="random", do_eval=False))


def test_too_small_training_fraction_fails_before_any_trial(tiny_bert, tmp_path):
    with pytest.raises(UserError, match="leaves 4 training examples, fewer than the largest batch searched"):
        tune(tune_config(tiny_bert, tmp_path, tune_train_fraction=0.125))
    assert not (tmp_path / "out" / "tuning").exists()

"""Experiment trackers (`--report_to`): TensorBoard, MLflow and Weights & Biases behind one small interface.

A run's trackers start once (with the run's configuration and hyperparameters), receive scalars at optimizer steps
(the per-step log's records, then each epoch's results), the final results and the saved model folder, and finish
once. `TrackerCallback` feeds them from `fit`; `tf_finetune.training.train` sends the final results and finishes them.

Where the data goes:
- tensorboard: `logging_dir` (default OUTPUT_DIR/runs): `train/` and `eval/` scalars, and in the folder itself the
  HParams session (the configuration and the final results), so runs and search trials compare in the HParams
  dashboard.
- mlflow: MLFLOW_TRACKING_URI when set, else a local file store `OUTPUT_DIR/mlruns`; experiment
  MLFLOW_EXPERIMENT_NAME (default tf-finetune), one run per training run, the model folder as the `model` artefact.
- wandb: online when the user is logged in (WANDB_API_KEY or a saved login), else offline into OUTPUT_DIR/wandb
  (WANDB_MODE, when set, decides); project WANDB_PROJECT (default tf-finetune).
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import netrc
import os
import shutil
import urllib.parse
from typing import TYPE_CHECKING, Any, Optional

import tf_keras

from tf_finetune.core.errors import UserError
from tf_finetune.core.layout import MLFLOW_DIR, TENSORBOARD_DIR, entry_of
from tf_finetune.runtime.checkpoints import RunState
from tf_finetune.tasks import hyperparameters

if TYPE_CHECKING:
    from tf_finetune.config import TrainConfig

logger = logging.getLogger(__name__)

# tracker name -> (module it needs, the pip command that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "pip install tensorboard"),
            "mlflow": ("mlflow", "pip install mlflow-skinny"),
            "wandb": ("wandb", "pip install wandb")}
DEFAULT_PROJECT = "tf-finetune"


def installed(name: str) -> bool:
    """Whether the package tracker `name` needs can be imported."""
    return importlib.util.find_spec(PACKAGES[name][0]) is not None


def resolve_report_to(report_to: list[str]) -> list[str]:
    """The trackers `--report_to` names (all: every installed one; none: no tracker). A named tracker whose package
    is missing is a UserError naming the pip command."""
    names = list(dict.fromkeys(report_to))
    if "none" in names:
        if len(names) > 1:
            raise UserError(f"--report_to none cannot go with other trackers ({' '.join(names)}); pass either none "
                            "or the trackers.")
        return []
    if "all" in names:
        return [name for name in PACKAGES if installed(name)]
    for name in names:
        if not installed(name):
            raise UserError(f"--report_to {name} needs the {PACKAGES[name][0]} package, which is not installed; run "
                            f"`{PACKAGES[name][1]}` (or pip install 'tf-finetune[trackers]'), or leave {name} out.")
    return names


def logging_dir(config: "TrainConfig") -> str:
    """The TensorBoard folder of a run: --logging_dir, else OUTPUT_DIR/runs."""
    return config.logging_dir or os.path.join(config.output_dir, TENSORBOARD_DIR)


def remove_run_logs(folder: str) -> None:
    """Remove a run's TensorBoard logs from its logging_dir (train/, eval/ and the session's event files), leaving
    a search's trial_<id> folders beside them: an overwritten run starts a clean curve."""
    for part in ("train", "eval"):
        shutil.rmtree(os.path.join(folder, part), ignore_errors=True)
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        os.remove(path)


def remove_trial_logs(folder: str) -> None:
    """Remove the trial_<id> TensorBoard runs of an earlier search from a logging_dir."""
    for path in glob.glob(os.path.join(folder, "trial_*")):
        shutil.rmtree(path, ignore_errors=True)


def tensorboard_hparams(config: "TrainConfig") -> dict[str, Any]:
    """The run's hyperparameters (config.hyperparameters) as TensorBoard HParams accepts them: booleans, numbers
    and strings (lists joined with spaces)."""
    return {name: " ".join(value) if isinstance(value, list) else value
            for name, value in hyperparameters(config.to_dict()).items()}


class Tracker:
    """One experiment tracker: started once, given scalars at optimizer steps, the final results and the model
    folder, then finished."""

    name = ""

    def start(self, config: dict[str, Any], hparams: dict[str, Any]) -> None:
        """Open the run with the whole configuration (`config`) and its hyperparameters (`hparams`)."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Record scalars at a global optimizer step (`eval_*` keys are validation results)."""

    def log_final(self, results: dict[str, Any], step: int) -> None:
        """Record the run's final results (all_results.json's numbers)."""

    def log_model(self, folder: str) -> None:
        """Store the saved model folder, where the tracker keeps artefacts."""

    def finish(self, failed: bool = False) -> None:
        """Close the run (`failed`: training stopped with an error or a signal); nothing is recorded afterwards."""


class TensorBoardTracker(Tracker):
    """tf.summary event files: `train/` (per-step loss, learning rate, epoch; per-epoch loss) and `eval/` (each
    epoch's validation results, without the `eval_` prefix, so train and eval loss share a chart), and in the
    folder itself the HParams session and the final results."""

    name = "tensorboard"

    def __init__(self, logging_dir: str, session_name: str):
        self.logging_dir = logging_dir
        self.session_name = session_name
        self.writers: dict[str, Any] = {}

    def start(self, config: dict[str, Any], hparams: dict[str, Any]) -> None:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        self.writers = {part: tf.summary.create_file_writer(os.path.join(self.logging_dir, part))
                        for part in ("train", "eval")}
        self.writers["session"] = tf.summary.create_file_writer(self.logging_dir)
        with self.writers["session"].as_default():
            hp.hparams(hparams, trial_id=self.session_name)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        train = {name: value for name, value in scalars.items() if not name.startswith("eval_")}
        evaluation = {name[len("eval_"):]: value for name, value in scalars.items() if name.startswith("eval_")}
        self._write("train", train, step)
        self._write("eval", evaluation, step)

    def log_final(self, results: dict[str, Any], step: int) -> None:
        self._write("session", _numbers(results), step)

    def finish(self, failed: bool = False) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}

    def _write(self, part: str, scalars: dict[str, float], step: int) -> None:
        import tensorflow as tf

        if not scalars:
            return
        with self.writers[part].as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        self.writers[part].flush()


class MlflowTracker(Tracker):
    """An MLflow run: the configuration as params, scalars as metrics at their step, the final results as the last
    value of each metric, the model folder as the `model` artefact."""

    name = "mlflow"

    def __init__(self, output_dir: str, run_name: str):
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow_default_uri(output_dir)
        self.run_name = run_name
        self.client: Any = None
        self.run_id: Optional[str] = None

    def start(self, config: dict[str, Any], hparams: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("file:"):
            # MLflow 3 refuses new file stores unless told otherwise; a local folder needs no database packages.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        params = [Param(name, str(value)[:6000]) for name, value in config.items()]
        for first in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[first:first + 100])

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._log(scalars, step)

    def log_final(self, results: dict[str, Any], step: int) -> None:
        self._log(_numbers(results), step)

    def log_model(self, folder: str) -> None:
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            entry = entry_of(name)  # the model as a Hub upload holds it, without the TensorBoard logs
            if name.startswith(".") or entry and (not entry.uploaded or entry.pattern == TENSORBOARD_DIR):
                continue
            if os.path.isdir(path):
                self.client.log_artifacts(self.run_id, path, artifact_path=f"model/{name}")
            else:
                self.client.log_artifact(self.run_id, path, artifact_path="model")

    def finish(self, failed: bool = False) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
            self.run_id = None

    def _log(self, scalars: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, step) for name, value in scalars.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)


def mlflow_default_uri(output_dir: str) -> str:
    """The local MLflow store of a run without MLFLOW_TRACKING_URI: file:OUTPUT_DIR/mlruns."""
    return "file:" + os.path.abspath(os.path.join(output_dir, MLFLOW_DIR))


class WandbTracker(Tracker):
    """A W&B run in OUTPUT_DIR/wandb: config, scalars at their step (history), the final results as its summary."""

    name = "wandb"

    def __init__(self, output_dir: str, run_name: str):
        self.output_dir = output_dir
        self.run_name = run_name
        self.run: Any = None

    def start(self, config: dict[str, Any], hparams: dict[str, Any]) -> None:
        import wandb

        os.makedirs(self.output_dir, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=self.run_name,
                              dir=os.path.abspath(self.output_dir), config=config, mode=wandb_mode(),
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def log_final(self, results: dict[str, Any], step: int) -> None:
        self.run.summary.update(_numbers(results))

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None


def wandb_mode() -> str:
    """WANDB_MODE when set; else online when the user is logged in (WANDB_API_KEY, or a saved login in ~/.netrc for
    the W&B host), else offline: nothing leaves the machine unless the user asked W&B for it."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class Trackers:
    """The trackers of one run, started on first use and finished once (a resumed run fits more than once)."""

    def __init__(self, trackers: list[Tracker], config: "TrainConfig"):
        self.trackers = trackers
        self.config = config
        self.started = False

    def __bool__(self) -> bool:
        return bool(self.trackers)

    @property
    def names(self) -> list[str]:
        return [tracker.name for tracker in self.trackers]

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        config, hparams = self.config.to_dict(), tensorboard_hparams(self.config)
        for tracker in self.trackers:
            tracker.start(config, hparams)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.start()
        for tracker in self.trackers:
            tracker.log_scalars(scalars, step)

    def finish(self, results: Optional[dict[str, Any]] = None, step: int = 0,
               model_folder: Optional[str] = None, failed: bool = False) -> None:
        """Send the final results and the model folder (when given), then close every tracker (`failed`: as a run
        that did not complete; a group never started has nothing to close)."""
        if failed and not self.started:
            return
        if not self.trackers:
            return
        self.start()
        for tracker in self.trackers:
            if results:
                tracker.log_final(results, step)
            if model_folder:
                tracker.log_model(model_folder)
            tracker.finish(failed=failed)
        self.started = False


def build_trackers(config: "TrainConfig") -> Trackers:
    """The trackers `config.report_to` names, unstarted (see resolve_report_to for the errors)."""
    run_name = os.path.basename(os.path.abspath(config.output_dir))
    builders = {"tensorboard": lambda: TensorBoardTracker(logging_dir(config), run_name),
                "mlflow": lambda: MlflowTracker(config.output_dir, run_name),
                "wandb": lambda: WandbTracker(config.output_dir, run_name)}
    return Trackers([builders[name]() for name in resolve_report_to(config.report_to)], config)


class TrackerCallback(tf_keras.callbacks.Callback):
    """Sends the per-step log's new records (StepLogCallback, before it, appends them to the run state) and each
    epoch's results (training loss as `epoch_loss`, `eval_*`) to the run's trackers, at the global step."""

    def __init__(self, trackers: Trackers, state: RunState):
        super().__init__()
        self.trackers = trackers
        self.state = state
        self.sent = 0

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.trackers.start()
        self.sent = len(self.state.log_history)  # earlier records were sent by the run that wrote them

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        for record in self.state.log_history[self.sent:]:
            self.trackers.log_scalars({key: value for key, value in record.items() if key != "step"},
                                      record["step"])
        self.sent = len(self.state.log_history)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        scalars = {("epoch_loss" if name == "loss" else name): value for name, value in _numbers(logs or {}).items()}
        self.trackers.log_scalars(scalars, int(self.model.optimizer.iterations.numpy()))


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a results dict as floats (booleans, strings, dicts and None left out)."""
    numbers = {}
    for name, value in values.items():
        if isinstance(value, bool) or value is None:
            continue
        try:
            numbers[name] = float(value)
        except (TypeError, ValueError):
            continue
    return numbers

"""Hyperparameter search with KerasTuner: search space, tuner, results table, and retraining of the best values.

KerasTuner 1.4 imports Keras 3, while our models are tf-keras (keras-tuner issue 1039), so only KerasTuner's
oracles and its trial bookkeeping are used: `FineTuneTuner.run_trial` builds a `FineTuneRun` from the trial's
`TrainConfig`, fits it with tf-keras callbacks of its own (KerasTuner never sees them), and reports the objective
to the oracle after every epoch.

Choices worth knowing:
- Trials keep no weights. Hyperband's successive-halving trials (`tuner/trial_id`, `tuner/initial_epoch`) train
  from scratch for `tuner/epochs` epochs instead of continuing an earlier trial: the linear-decay learning-rate
  schedule depends on the total number of epochs, so a model trained for one epoch has already decayed its learning
  rate to zero, and continuing it would not score the configuration that is retrained afterwards.
- A search resumes from `tune_dir`: finished trials are kept, a trial cut off halfway is run again from scratch.
  `overwrite_output_dir` starts the search afresh.
- Bayesian optimisation starts from max(2, max_trials // 3) random trials (KerasTuner's default, 3 per
  hyperparameter, would leave nothing to the Gaussian process at the usual budgets).
- Hyperband takes its epoch budget from the space's `num_train_epochs` (its largest value) and also stops after
  `max_trials` trials.
- Each trial clears the tf-keras session afterwards; repeated `fit` in one process still leaks some memory
  (tensorflow 37505), so very long searches are best split over several runs of the same command, which resume.

Example (a notebook):
    tuner, best = tune(TrainConfig(task="sst2", model_name_or_path=path, data_dir="glue", tune="bayesian",
                                   max_trials=4, tune_train_fraction=0.05, output_dir="out"))
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import logging
import math
import os
import typing
from pathlib import Path
from typing import Any, Optional

import keras_tuner
import numpy as np
import tensorflow as tf
import tf_keras

from tf_finetune.callbacks import EvaluationCallback, keras_verbosity, progress_callbacks
from tf_finetune.checkpoints import RunState
from tf_finetune.config import TrainConfig, field_fact
from tf_finetune.distribute import describe_strategy, resolve_strategy
from tf_finetune.errors import UserError
from tf_finetune.hub import check_push_access
from tf_finetune.models import load_model_config, load_tokenizer
from tf_finetune.outputs import read_json, write_json, write_text
from tf_finetune.tasks import get_task
from tf_finetune.trackers import logging_dir, remove_trial_logs, resolve_report_to
from tf_finetune.training import RESULTS_FILE, FineTuneRun, resolve_monitor, train

logger = logging.getLogger(__name__)

EPOCHS = "num_train_epochs"
BATCH_SIZE = "per_device_train_batch_size"
SEARCH_FILE = "search.json"
RESULTS_JSON = "tuning_results.json"
RESULTS_CSV = "tuning_results.csv"
TUNER_KINDS = ("random", "bayesian", "hyperband")

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "min_value": 1e-5, "max_value": 1e-4, "sampling": "log"},
    BATCH_SIZE: {"type": "choice", "values": [8, 16, 32]},
    EPOCHS: {"type": "int", "min_value": 1, "max_value": 3},
    "warmup_ratio": {"type": "float", "min_value": 0.0, "max_value": 0.2},
    "weight_decay": {"type": "float", "min_value": 0.0, "max_value": 0.1},
}
_HP_METHODS = {"float": "Float", "int": "Int", "choice": "Choice", "boolean": "Boolean", "fixed": "Fixed"}
_SCALAR_TYPES = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class Objective:
    """The validation metric a search optimises (`eval_*` name) and its direction."""

    name: str
    greater_is_better: bool

    @property
    def direction(self) -> str:
        return "max" if self.greater_is_better else "min"


def tune(config: TrainConfig) -> tuple[keras_tuner.Tuner, dict[str, Any]]:
    """Search hyperparameters, write tuning_results.json/.csv, then (with `tune_retrain`) train the best values on the
    full training set into output_dir. Returns the tuner and the best hyperparameters (TrainConfig field names).

    The search state lives in `tune_dir` (default <output_dir>/tuning); running the same call again resumes it.
    """
    config.validate()
    if config.tune not in TUNER_KINDS:
        raise UserError(f"--tune must be one of {', '.join(TUNER_KINDS)} to run a search, got {config.tune!r}.")
    if not (config.do_train and config.do_eval):
        raise UserError("a search trains and evaluates every trial; drop --do_train false and --do_eval false.")
    space = build_search_space(config)
    resolve_report_to(config.report_to)  # a tracker that is not installed fails now, not in the first trial
    if config.tune_retrain and not config.overwrite_output_dir and os.path.isfile(
            os.path.join(config.output_dir, RESULTS_FILE)):
        raise UserError(f"{config.output_dir} already holds a finished run ({RESULTS_FILE}); pass "
                        "--overwrite_output_dir or another --output_dir.")
    if config.push_to_hub and config.tune_retrain:  # a bad token should fail now, not after the search
        check_push_access(config.hub_model_id, config.output_dir, config.hub_token, config.hub_private_repo)
    objective, train_samples = inspect_data(config)
    strategy = resolve_strategy(config)
    logger.info("Search trials run under %s.", describe_strategy(strategy))
    largest_batch = (largest(space, BATCH_SIZE, config.per_device_train_batch_size) * strategy.num_replicas_in_sync *
                     config.gradient_accumulation_steps)
    if train_samples < largest_batch:
        raise UserError(f"--tune_train_fraction {config.tune_train_fraction} leaves {train_samples} training "
                        f"examples, fewer than the largest batch searched ({largest_batch} over all replicas); "
                        "raise it.")
    tuner = build_tuner(config, space, objective, train_samples, strategy)
    if config.overwrite_output_dir:  # trials run again under the same ids: their old TensorBoard runs go
        remove_trial_logs(logging_dir(config))
    tuner.search(verbose=config.verbose)
    best = best_hyperparameters(tuner)
    write_results(config, tuner, best)
    if best is None:
        raise UserError(f"no trial of the search completed; their errors are in {config.output_dir}/{RESULTS_JSON}.")
    if config.tune_retrain:
        logger.info("Retraining the best configuration on the full training set: %s", best)
        train(config.replace(**best), extra_results={"best_hyperparameters": best})
    return tuner, best


def build_search_space(config: TrainConfig) -> keras_tuner.HyperParameters:
    """The search space: DEFAULT_SPACE, or the `tune_space` file's, which replaces it. Bad specs raise UserError.

    Every bound of every hyperparameter (choices, range ends) must pass TrainConfig's validation.
    """
    specs, source = (_read_space_file(config.tune_space), config.tune_space) if config.tune_space else \
        (DEFAULT_SPACE, "default")
    hints = typing.get_type_hints(TrainConfig)
    space = keras_tuner.HyperParameters()
    for name, spec in specs.items():
        if name not in hints:
            close = difflib.get_close_matches(name, hints, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"search space {source}: unknown option '{name}'; {hint}keys are TrainConfig field names "
                            "(the --flags without dashes).")
        if not field_fact(name, "tunable") or not _field_types(hints[name]):
            raise UserError(f"search space {source}: '{name}' cannot be tuned; tune numbers such as learning_rate, "
                            f"{BATCH_SIZE}, {EPOCHS}, warmup_ratio or weight_decay.")
        if not isinstance(spec, dict) or spec.get("type") not in _HP_METHODS:
            raise UserError(f"search space {source}: '{name}' needs a mapping whose 'type' is one of "
                            f"{', '.join(_HP_METHODS)}; got {spec!r}.")
        try:
            getattr(space, _HP_METHODS[spec["type"]])(name, **{k: v for k, v in spec.items() if k != "type"})
        except (TypeError, ValueError) as error:
            raise UserError(f"search space {source}: '{name}': {str(error).splitlines()[0]}") from error
        for value in _candidates(_find(space, name)):
            _check_value(config, name, value, _field_types(hints[name]), source)
    return space


def largest(space: keras_tuner.HyperParameters, name: str, default: Any) -> Any:
    """The largest value a hyperparameter of the space can take, or `default` when the space does not tune it."""
    return max(_candidates(_find(space, name))) if name in space else default


def inspect_data(config: TrainConfig) -> tuple[Objective, int]:
    """The search objective (FineTuneRun's monitor logic, or `tune_objective` with the direction inferred from the
    metric) and the number of training examples one trial uses."""
    task = get_task(config.task)
    raw_datasets = task.load_raw_datasets(config)
    model_config = load_model_config(config.model_name_or_path, **task.model_config_kwargs(raw_datasets, config))
    monitor_config = config.replace(metric_for_best_model=config.tune_objective, greater_is_better=None) \
        if config.tune_objective else config
    objective = Objective(*resolve_monitor(monitor_config, task, model_config))
    tokenizer = load_tokenizer(config.tokenizer_name or config.model_name_or_path)
    available = len(task.tokenize(raw_datasets, tokenizer, config)["train"])  # examples: texts, blocks, questions
    return objective, math.ceil(available * config.tune_train_fraction)


class _ResumableState:
    """Writes the oracle's and the trials' JSON state atomically, so a kill never leaves a search that cannot resume,
    and does not run again a trial that finished just before a kill cut off the oracle's own save."""

    def save(self) -> None:
        write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial: keras_tuner.engine.trial.Trial) -> None:
        write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())

    def reload(self) -> None:
        super().reload()
        finished = [trial_id for trial_id in self._retry_queue if self.trials[trial_id].status == "COMPLETED"]
        self._retry_queue = [trial_id for trial_id in self._retry_queue if trial_id not in finished]
        self.end_order += [trial_id for trial_id in finished if trial_id not in self.end_order]


class RandomSearchOracle(_ResumableState, keras_tuner.oracles.RandomSearchOracle):
    """KerasTuner's random search, resumable after a kill."""


class BayesianOptimizationOracle(_ResumableState, keras_tuner.oracles.BayesianOptimizationOracle):
    """KerasTuner's Bayesian optimisation (Gaussian process), resumable after a kill."""


class HyperbandOracle(_ResumableState, keras_tuner.oracles.HyperbandOracle):
    """KerasTuner's Hyperband, resumable after a kill."""


def build_oracle(config: TrainConfig, space: keras_tuner.HyperParameters,
                 objective: Objective) -> keras_tuner.Oracle:
    """The oracle of `config.tune`, seeded with `config.seed`.

    Hyperband sets the epochs itself: its budget is the space's largest `num_train_epochs`, which leaves the space.
    """
    kt_objective = keras_tuner.Objective(objective.name, objective.direction)
    common = {"objective": kt_objective, "seed": config.seed, "allow_new_entries": False}
    if config.tune == "hyperband":
        without_epochs = keras_tuner.HyperParameters()
        without_epochs.merge([hp for hp in space.space if hp.name != EPOCHS])
        oracle = HyperbandOracle(max_epochs=largest(space, EPOCHS, config.num_train_epochs),
                                 hyperparameters=without_epochs, **common)
        oracle.max_trials = config.max_trials
        return oracle
    common["hyperparameters"] = space
    if config.tune == "bayesian":
        return BayesianOptimizationOracle(max_trials=config.max_trials,
                                          num_initial_points=max(2, config.max_trials // 3), **common)
    return RandomSearchOracle(max_trials=config.max_trials, **common)


def build_tuner(config: TrainConfig, space: keras_tuner.HyperParameters, objective: Objective,
                train_samples: int, strategy: Optional[tf.distribute.Strategy] = None) -> FineTuneTuner:
    """A tuner over `tune_dir`, resumed when it holds a search with the same settings, fresh otherwise. Its trials
    train under `strategy` (default: TensorFlow's current one)."""
    tune_dir = os.path.abspath(config.tune_dir or os.path.join(config.output_dir, "tuning"))
    signature = _signature(config, space, objective, train_samples)
    search_file = os.path.join(tune_dir, SEARCH_FILE)
    if not config.overwrite_output_dir and os.path.isfile(search_file):
        saved = read_json(search_file)
        changed = sorted(key for key in {**saved, **signature} if saved.get(key) != signature.get(key))
        if changed:
            raise UserError(f"--tune_dir {tune_dir} holds a search with other settings (changed: {', '.join(changed)}"
                            "); pass --overwrite_output_dir to start it afresh or choose another --tune_dir.")
    tuner = FineTuneTuner(config, objective, train_samples, strategy or tf.distribute.get_strategy(),
                          oracle=build_oracle(config, space, objective),
                          directory=os.path.dirname(tune_dir), project_name=os.path.basename(tune_dir),
                          overwrite=config.overwrite_output_dir)
    tuner.save()  # from now on, the same call reloads this search instead of starting another one
    write_json(search_file, signature)
    return tuner


class FineTuneTuner(keras_tuner.Tuner):
    """Runs each trial as a tf-keras `FineTuneRun` on the search's share of the training data, under the run's
    distribution strategy (the trial's batch size is per replica, as in training).

    Example:
        tuner = build_tuner(config, build_search_space(config), *inspect_data(config))
        tuner.search()
    """

    def __init__(self, config: TrainConfig, objective: Objective, train_samples: int,
                 strategy: tf.distribute.Strategy, **kwargs: Any):
        self.config = config
        self.objective = objective
        self.train_samples = train_samples
        self.strategy = strategy
        super().__init__(**kwargs)

    def trial_config(self, trial: keras_tuner.engine.trial.Trial) -> TrainConfig:
        """The TrainConfig a trial trains with: its hyperparameters on the search's share of the training data; its
        TensorBoard run is `trial_<id>` in the search's logging_dir, so trials compare in the HParams dashboard."""
        return self.config.replace(**config_values(trial.hyperparameters.values), max_train_samples=self.train_samples,
                                   output_dir=self.get_trial_dir(trial.trial_id), do_predict=False,
                                   push_to_hub=False,
                                   logging_dir=os.path.join(logging_dir(self.config), f"trial_{trial.trial_id}"))

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Fine-tune and evaluate one configuration; the objective reaches the oracle after every epoch."""
        recorded = self.oracle.get_trial(trial.trial_id)
        recorded.metrics = type(recorded.metrics)()  # a trial cut off by an interruption starts again from scratch
        config = self.trial_config(trial)
        try:
            run = FineTuneRun(config, self.strategy)
            logger.info("Trial %s: %d optimizer steps per epoch of %d examples (%s).", trial.trial_id,
                        run.steps_per_epoch, run.global_train_batch_size, describe_strategy(self.strategy))
            run.compile()
            callbacks = [EvaluationCallback(run.evaluate), ReportCallback(self.oracle, trial.trial_id, self.objective),
                         *run.logging_callbacks(RunState())]
            if config.early_stopping_patience:
                callbacks.append(tf_keras.callbacks.EarlyStopping(monitor=self.objective.name,
                                                                  mode=self.objective.direction,
                                                                  patience=config.early_stopping_patience))
            callbacks += progress_callbacks(config.verbose)
            try:
                run.model.fit(run.train_dataset, epochs=config.num_train_epochs, callbacks=callbacks,
                              verbose=keras_verbosity(config.verbose))
            except BaseException:
                run.trackers.finish(failed=True)
                raise
        except UserError as error:
            raise TrialUserError(str(error)) from error
        result = {self.objective.name: recorded.metrics.get_best_value(self.objective.name)}
        run.trackers.finish(result, step=int(run.model.optimizer.iterations.numpy()))
        return result

    def save(self) -> None:
        self.oracle.save()
        write_json(self._get_tuner_fname(), self.get_state())

    def load_model(self, trial: keras_tuner.engine.trial.Trial) -> Any:
        raise NotImplementedError("trials keep no weights; train the best hyperparameters with "
                                  "tf_finetune.training.train (tune() does so with tune_retrain).")


class ReportCallback(tf_keras.callbacks.Callback):
    """Reports the objective of each epoch to the oracle (step = epoch); EvaluationCallback must come first."""

    def __init__(self, oracle: keras_tuner.Oracle, trial_id: str, objective: Objective):
        super().__init__()
        self.oracle = oracle
        self.trial_id = trial_id
        self.objective = objective

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        if self.objective.name not in logs:
            raise UserError(f"the search objective {self.objective.name!r} is not among the epoch's results "
                            f"({', '.join(sorted(logs))}); pass one of them to --tune_objective.")
        self.oracle.update_trial(self.trial_id, {self.objective.name: float(logs[self.objective.name])}, step=epoch)


class TrialUserError(UserError, keras_tuner.errors.FatalError):
    """A UserError inside a trial: it ends the search (KerasTuner would record other errors as a failed trial)."""


def config_values(values: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields from a trial's hyperparameter values (Hyperband's `tuner/epochs` is the epoch count).

    Values become plain Python numbers: the Gaussian process proposes NumPy float64s, which TensorFlow would keep as
    float64 and then refuse to multiply with float32 weights (weight decay).
    """
    fields = {name: value.item() if isinstance(value, np.generic) else value for name, value in values.items()
              if not name.startswith("tuner/")}
    if "tuner/epochs" in values:
        fields[EPOCHS] = values["tuner/epochs"]
    return fields


def best_hyperparameters(tuner: keras_tuner.Tuner) -> Optional[dict[str, Any]]:
    """The best completed trial's values as TrainConfig fields (None when no trial completed)."""
    completed = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    return config_values(completed[0].hyperparameters.values) if completed else None


def trial_rows(tuner: keras_tuner.Tuner) -> list[dict[str, Any]]:
    """One row per trial, best first (trials without a score last): id, status, score, best epoch, values."""
    objective = tuner.oracle.objective.name
    trials = tuner.oracle.get_best_trials(len(tuner.oracle.trials))
    rows = []
    for trial in trials:
        scored = trial.status == "COMPLETED"
        history = [obs.mean() for obs in trial.metrics.get_history(objective)] if trial.metrics.exists(objective) \
            else []
        row = {"trial_id": trial.trial_id, "status": trial.status,
               "score": float(trial.score) if scored else None,
               "best_epoch": trial.best_step + 1 if scored else None,
               **config_values(trial.hyperparameters.values),
               "history": [float(value) for value in history]}
        if trial.message:
            row["error"] = trial.message.strip().splitlines()[-1]
        rows.append(row)
    return rows


def write_results(config: TrainConfig, tuner: FineTuneTuner, best: Optional[dict[str, Any]]) -> None:
    """Print the trials table and write tuning_results.json and tuning_results.csv into output_dir."""
    rows = trial_rows(tuner)
    write_json(os.path.join(config.output_dir, RESULTS_JSON), {
        "tuner": config.tune, "objective": tuner.objective.name, "direction": tuner.objective.direction,
        "train_samples": tuner.train_samples, "best_hyperparameters": best, "trials": rows})
    columns = list(dict.fromkeys(key for row in rows for key in row if key not in ("history", "error")))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(os.path.join(config.output_dir, RESULTS_CSV), buffer.getvalue())
    print(f"Trials by {tuner.objective.name} ({tuner.objective.direction}), best first:")
    print(format_table(rows, columns))


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table with aligned columns."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [columns, *[[cell(row.get(column)) for column in columns] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in cells)
    return "\n".join(line.rstrip() for line in lines)


def _read_space_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"search space file {path} does not exist; pass a .yaml or .json file to --tune_space.")
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            specs = yaml.safe_load(file.read_text())
        else:
            specs = json.loads(file.read_text())
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"search space file {path} is not valid {file.suffix.lstrip('.').upper()}: "
                        f"{str(error).splitlines()[0]}") from error
    if not isinstance(specs, dict) or not specs:
        raise UserError(f"search space file {path} must map option names to specs, e.g. {{\"learning_rate\": "
                        '{"type": "float", "min_value": 1e-5, "max_value": 1e-4, "sampling": "log"}}.')
    return specs


def _field_types(hint: Any) -> tuple[type, ...]:
    """The scalar types a TrainConfig field accepts (empty for lists and other non-scalars)."""
    types = tuple(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
    return types if all(t in _SCALAR_TYPES for t in types) else ()


def _find(space: keras_tuner.HyperParameters, name: str) -> keras_tuner.engine.hyperparameters.HyperParameter:
    return next(hp for hp in space.space if hp.name == name)


def _candidates(hp: keras_tuner.engine.hyperparameters.HyperParameter) -> list[Any]:
    """The values that bound what a hyperparameter can take: its choices, or its range's ends."""
    if isinstance(hp, keras_tuner.engine.hyperparameters.Choice):
        return list(hp.values)
    if isinstance(hp, keras_tuner.engine.hyperparameters.Fixed):
        return [hp.value]
    if isinstance(hp, keras_tuner.engine.hyperparameters.Boolean):
        return [False, True]
    return [hp.min_value, hp.max_value]


def _check_value(config: TrainConfig, name: str, value: Any, types: tuple[type, ...], source: str) -> None:
    accepted = (float in types and isinstance(value, (int, float))) or type(value) in types
    if not accepted or (isinstance(value, bool) and bool not in types):
        raise UserError(f"search space {source}: '{name}' takes {' or '.join(t.__name__ for t in types)} values, "
                        f"got {value!r}.")
    try:
        config.replace(**{name: value}).validate()
    except UserError as error:
        raise UserError(f"search space {source}: '{name}' can take {value!r}, which is invalid: {error}") from error


def _signature(config: TrainConfig, space: keras_tuner.HyperParameters, objective: Objective,
               train_samples: int) -> dict[str, Any]:
    """What makes trials comparable: tuner, objective, space, and every config field a trial depends on."""
    tuned = {hp.name for hp in space.space}
    fields = {name: value for name, value in config.to_dict().items()
              if field_fact(name, "changes_training") and name not in tuned}
    signature = {"objective": objective.name, "direction": objective.direction, "train_samples": train_samples,
                 "space": space.get_config()["space"], **fields}
    return json.loads(json.dumps(signature))

"""The tuner: each trial a tf-keras `FineTuneRun`, the objective reported to the oracle every epoch."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

import keras_tuner
import tensorflow as tf
import tf_keras

from tf_finetune.config import TrainConfig, field_fact
from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json, write_json
from tf_finetune.core.layout import SEARCH_FILE, TUNING_DIR
from tf_finetune.runtime.checkpoints import RunState
from tf_finetune.runtime.distribute import describe_strategy
from tf_finetune.training import FineTuneRun
from tf_finetune.training.callback_list import SearchTrial, build_callbacks
from tf_finetune.training.callbacks import keras_verbosity
from tf_finetune.training.trackers import logging_dir
from tf_finetune.tuning.oracles import build_oracle
from tf_finetune.tuning.results import config_values
from tf_finetune.tuning.space import Objective

logger = logging.getLogger(__name__)




def build_tuner(config: TrainConfig, space: keras_tuner.HyperParameters, objective: Objective,
                train_samples: int, strategy: Optional[tf.distribute.Strategy] = None) -> FineTuneTuner:
    """A tuner over `tune_dir`, resumed when it holds a search with the same settings, fresh otherwise. Its trials
    train under `strategy` (default: TensorFlow's current one)."""
    tune_dir = os.path.abspath(config.tune_dir or os.path.join(config.output_dir, TUNING_DIR))
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
            report = ReportCallback(self.oracle, trial.trial_id, self.objective)
            callbacks = build_callbacks(run, RunState(), trial=SearchTrial(
                report, self.objective.name, self.objective.greater_is_better))
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


def _signature(config: TrainConfig, space: keras_tuner.HyperParameters, objective: Objective,
               train_samples: int) -> dict[str, Any]:
    """What makes trials comparable: tuner, objective, space, and every config field a trial depends on."""
    tuned = {hp.name for hp in space.space}
    fields = {name: value for name, value in config.to_dict().items()
              if field_fact(name, "changes_training") and name not in tuned}
    signature = {"objective": objective.name, "direction": objective.direction, "train_samples": train_samples,
                 "space": space.get_config()["space"], **fields}
    return json.loads(json.dumps(signature))

"""KerasTuner's oracles, made resumable after a kill (their state written atomically)."""
from __future__ import annotations

import os

import keras_tuner

from tf_finetune.config import TrainConfig
from tf_finetune.core.files import write_json
from tf_finetune.tuning.space import EPOCHS, Objective, largest


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

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

import logging
import math
import os
from typing import Any

import keras_tuner

from tf_finetune.config import TrainConfig, field_choices
from tf_finetune.core.errors import UserError
from tf_finetune.core.layout import RESULTS_FILE, TUNING_RESULTS_FILE
from tf_finetune.hub.client import check_push_access
from tf_finetune.models.loading import load_model_config
from tf_finetune.runtime.distribute import describe_strategy, resolve_strategy
from tf_finetune.tasks import get_task
from tf_finetune.training import train
from tf_finetune.training.run import resolve_monitor
from tf_finetune.training.trackers import logging_dir, remove_trial_logs, resolve_report_to
from tf_finetune.tuning.results import best_hyperparameters, write_results
from tf_finetune.tuning.space import BATCH_SIZE, Objective, build_search_space, largest
from tf_finetune.tuning.tuner import build_tuner

logger = logging.getLogger(__name__)


def tune(config: TrainConfig) -> tuple[keras_tuner.Tuner, dict[str, Any]]:
    """Search hyperparameters, write tuning_results.json/.csv, then (with `tune_retrain`) train the best values on the
    full training set into output_dir. Returns the tuner and the best hyperparameters (TrainConfig field names).

    The search state lives in `tune_dir` (default <output_dir>/tuning); running the same call again resumes it.
    """
    config.validate()
    if config.tune not in field_choices("tune"):
        raise UserError(f"--tune must be one of {', '.join(field_choices('tune'))} to run a search, got "
                        f"{config.tune!r}.")
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
        raise UserError(f"no trial of the search completed; their errors are in "
                        f"{os.path.join(config.output_dir, TUNING_RESULTS_FILE)}.")
    if config.tune_retrain:
        logger.info("Retraining the best configuration on the full training set: %s", best)
        train(config.replace(**best), extra_results={"best_hyperparameters": best})
    return tuner, best


def inspect_data(config: TrainConfig) -> tuple[Objective, int]:
    """The search objective (FineTuneRun's monitor logic, or `tune_objective` with the direction inferred from the
    metric) and the number of training examples one trial uses."""
    task = get_task(config.task)
    raw_datasets = task.load_raw_datasets(config)
    model_config = load_model_config(config.model_name_or_path, **task.model_config_kwargs(raw_datasets, config))
    monitor_config = config.replace(metric_for_best_model=config.tune_objective, greater_is_better=None) \
        if config.tune_objective else config
    objective = Objective(*resolve_monitor(monitor_config, task, model_config))
    preprocessor = task.load_preprocessor(config.tokenizer_name or config.model_name_or_path)
    available = len(task.tokenize(raw_datasets, preprocessor, config)["train"])  # examples: texts, blocks, questions
    return objective, math.ceil(available * config.tune_train_fraction)




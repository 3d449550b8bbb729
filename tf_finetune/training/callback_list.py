"""`build_callbacks`: the one list of Keras callbacks that `train`, notebooks (`FineTuneRun.callbacks`) and search
trials fit with.

Its order is what each callback reads of the ones before it (in `logs` and the shared RunState): evaluation ->
a search trial's report to the oracle -> best model / early stop -> history -> the task's own -> divergence guard
-> per-step log -> trackers -> checkpoint -> progress lines -> Hub push.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import tf_keras

from tf_finetune.runtime.checkpoints import RunState
from tf_finetune.training.callbacks import (
    BestModelCallback,
    CheckpointCallback,
    DivergenceGuard,
    EvaluationCallback,
    HistoryCallback,
    HubPushCallback,
    progress_callbacks,
)
from tf_finetune.training.step_log import StepLogCallback
from tf_finetune.training.trackers import TrackerCallback

if TYPE_CHECKING:
    from tf_finetune.hub.client import HubUploader
    from tf_finetune.training.run import FineTuneRun


@dataclass(frozen=True)
class SearchTrial:
    """A search trial's part in its callbacks: `report` sends each epoch's objective to the oracle, and early
    stopping watches the objective (`objective`, larger better when `greater_is_better`), not the run's monitor."""

    report: tf_keras.callbacks.Callback
    objective: str
    greater_is_better: bool


def build_callbacks(run: FineTuneRun, state: RunState, *, checkpoint: bool = False, batch_offset: int = 0,
                    restore_best: bool = True, trial: Optional[SearchTrial] = None,
                    uploader: Optional[HubUploader] = None) -> list[tf_keras.callbacks.Callback]:
    """The run's callbacks in their order (see the module docstring), sharing `state`.

    Args:
        checkpoint: write checkpoints as --save_strategy says (`train`); the best epoch's weights file then stays
            beside them for a resumed run.
        batch_offset: batches of a resumed epoch trained before.
        restore_best: false when more training follows this fit: the best weights are not put back at its end.
        trial: a search trial's: its report right after evaluation, early stopping on its objective, no weights
            kept. History, the task's own callbacks and the divergence guard stay off: a trial keeps nothing but its
            score, and a UserError inside a trial ends the whole search.
        uploader: pushes the model after every epoch when --hub_strategy is epoch.
    """
    config = run.config
    callbacks: list[tf_keras.callbacks.Callback] = []
    if run.eval_dataset is not None and config.do_eval:
        callbacks.append(EvaluationCallback(run.evaluate))
        if trial:
            callbacks += [trial.report, BestModelCallback(state, trial.objective, trial.greater_is_better, None,
                                                          patience=config.early_stopping_patience, restore=False)]
        else:
            callbacks.append(BestModelCallback(
                state, run.monitor, run.greater_is_better, run.checkpoint_dir,
                patience=config.early_stopping_patience, restore=config.load_best_model_at_end and restore_best,
                keep_at_end=checkpoint))
    if not trial:
        callbacks.append(HistoryCallback(state, config.output_dir))
        callbacks += run.task.training_callbacks(run.preprocessor, run.splits, config)
        callbacks.append(DivergenceGuard(state))
    callbacks.append(StepLogCallback(state, config.output_dir, config.logging_steps, run.steps_per_epoch,
                                     resumed_epoch=batch_offset > 0))
    if run.trackers:
        callbacks.append(TrackerCallback(run.trackers, state))
    if checkpoint:
        callbacks.append(CheckpointCallback(
            state, run.checkpoint_dir, run.checkpoint(), save=config.save_strategy != "no",
            save_steps=config.save_steps if config.save_strategy == "steps" else None,
            total_limit=config.save_total_limit, save_on_signal=config.save_on_signal, batch_offset=batch_offset))
    callbacks += progress_callbacks(config.verbose, batch_offset)
    if uploader and config.hub_strategy == "epoch":
        callbacks.append(HubPushCallback(run.save, uploader))
    return callbacks

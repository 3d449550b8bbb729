"""`train`: the whole job, in phases: prepare (and resume), fit, evaluate, save, report and upload."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tf_finetune.config import TrainConfig
from tf_finetune.core.files import check_free_space, check_output_dir, write_json
from tf_finetune.core.layout import CHECKPOINT_DIR, EVAL_RESULTS_FILE, RESULTS_FILE, RUN_CONFIG_FILE
from tf_finetune.hub.client import HubUploader, check_push_access, push_command
from tf_finetune.outputs.export import add_pytorch_weights
from tf_finetune.outputs.model_card import write_model_card_for_run
from tf_finetune.outputs.report import write_report
from tf_finetune.outputs.run_info import now, run_info, write_run_info
from tf_finetune.runtime.checkpoints import RunState, discard_after, restore_checkpoint
from tf_finetune.runtime.distribute import describe_strategy, is_chief, resolve_strategy, worker_scratch_dir
from tf_finetune.training.baseline import features_baseline
from tf_finetune.training.callback_list import build_callbacks
from tf_finetune.training.callbacks import CheckpointCallback, keras_verbosity, restore_best_weights
from tf_finetune.training.resume import remove_previous_run, resume_state
from tf_finetune.training.run import FineTuneRun
from tf_finetune.training.trackers import logging_dir, remove_run_logs

logger = logging.getLogger(__name__)


def train(config: TrainConfig, extra_callbacks: Optional[list[tf_keras.callbacks.Callback]] = None,
          extra_results: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Fine-tune, evaluate, save and (optionally) predict, resuming an interrupted run in output_dir.

    Returns the results that are also written to all_results.json, with `extra_results` (e.g. the tuner's
    best_hyperparameters) added. In a multi-worker run every worker calls this; only the chief writes output_dir
    (and pushes to the Hub), the others write to a scratch folder that is removed at the end.
    """
    strategy = resolve_strategy(config)
    logger.info("Distribution: %s.", describe_strategy(strategy))
    if is_chief(strategy):
        return _train_on_this_worker(config, strategy, extra_callbacks, extra_results)
    resume_entries = () if config.overwrite_output_dir else (CHECKPOINT_DIR, RESULTS_FILE)
    with worker_scratch_dir(config.output_dir, resume_entries) as scratch:
        # The chief alone reports, uploads and measures the baseline; --logging_dir may be the chief's own folder.
        worker = config.replace(output_dir=scratch, push_to_hub=False, report_to=["none"], logging_dir=None,
                                features_baseline=False, hub_export="none")
        return _train_on_this_worker(worker, strategy, extra_callbacks, extra_results)


def _train_on_this_worker(config: TrainConfig, strategy: tf.distribute.Strategy,
                          extra_callbacks: Optional[list[tf_keras.callbacks.Callback]],
                          extra_results: Optional[dict[str, Any]]) -> dict[str, Any]:
    """`train` on this worker, writing into config.output_dir; its trackers are closed at the end, as failed when
    anything after the run was built fails (or is interrupted)."""
    started = time.perf_counter()
    started_at = now()
    check_output_dir(config.output_dir)
    state = resume_state(config, os.path.join(config.output_dir, CHECKPOINT_DIR))
    run = FineTuneRun(config, strategy)  # checks the data and the model before anything is removed or created
    try:
        results = _run_phases(config, run, state, started_at, list(extra_callbacks or []), extra_results or {})
    except BaseException:
        run.trackers.finish(failed=True)
        raise
    logger.info(summary_line(results, run.monitor, time.perf_counter() - started, config.output_dir))
    return results


def _run_phases(config: TrainConfig, run: FineTuneRun, state: RunState, started_at: str,
                extra_callbacks: list[tf_keras.callbacks.Callback], extra_results: dict[str, Any]) -> dict[str, Any]:
    """The phases of the run built from `config` (as given, not as the run settled it: run_config.json keeps what
    the user asked for): prepare and resume from `state`, fit, evaluate, save, report, upload. Returns its
    results."""
    if config.check_disk_space and config.do_train:
        _check_disk_space(run)
    # Before training (and before a checkpoint is restored), while the encoder is still the pretrained one.
    baseline_results = features_baseline(run) if config.features_baseline else {}
    if config.do_train:
        _compile_and_resume(run, state)
    if config.overwrite_output_dir:
        remove_previous_run(config.output_dir)
        remove_run_logs(logging_dir(config))
    uploader = _hub_uploader(config) if config.push_to_hub else None
    write_json(os.path.join(config.output_dir, RUN_CONFIG_FILE), config.to_dict())
    results = _fit(run, state, uploader, extra_callbacks) if config.do_train else {}
    eval_results, eval_files, eval_runtime = _evaluate(run) if config.do_eval else ({}, {}, None)
    results.update(eval_results)
    results.update(baseline_results)
    if config.do_predict:
        logger.info("Wrote the test predictions to %s.", run.write_predictions())
    results.update(extra_results)
    _save(run, results, eval_results, eval_files)
    _report(config, run, state, results, started_at, eval_runtime, uploader)
    if uploader:
        _upload(uploader, config.output_dir)
    return results


def _check_disk_space(run: FineTuneRun) -> None:
    """A UserError now when output_dir's disk cannot hold the checkpoints the run keeps."""
    weights = sum(int(np.prod(w.shape)) * w.dtype.size for w in run.model.weights)
    optimizer_state = 2 * sum(int(np.prod(w.shape)) * w.dtype.size for w in run.model.trainable_weights)
    kept = (run.config.save_total_limit or 1) + 1  # the checkpoints kept, and the one being written
    check_free_space(run.config.output_dir, kept * (weights + optimizer_state))


def _compile_and_resume(run: FineTuneRun, state: RunState) -> None:
    """Compile, then restore the checkpoint `state` was read from (if any) and discard later checkpoints. Before
    anything is written: a checkpoint of another model fails here."""
    run.compile()
    if state.checkpoint_path:
        restore_checkpoint(run.checkpoint(), state)
        discard_after(run.checkpoint_dir, state.global_step)
        logger.info("Resuming from %s: epoch %d of %d, %d of its %d steps done.", state.checkpoint_path,
                    state.epoch + 1, run.config.num_train_epochs, state.step_in_epoch, run.steps_per_epoch)


def _fit(run: FineTuneRun, state: RunState, uploader: Optional[HubUploader],
         extra_callbacks: list[tf_keras.callbacks.Callback]) -> dict[str, Any]:
    """Train the epochs left after `state` (none when they are done or the run stopped early: then only the best
    weights are put back) and return the training results."""
    start, start_step = time.perf_counter(), state.global_step
    _fit_remaining_epochs(run, state, uploader, extra_callbacks)
    runtime = time.perf_counter() - start
    samples = (state.global_step - start_step) * run.global_train_batch_size
    results = dict(epoch=state.epoch, train_samples=len(run.splits["train"]), train_runtime=round(runtime, 3),
                   train_samples_per_second=round(samples / runtime, 3) if runtime > 0 and samples else 0.0,
                   trainable_parameters=run.trainable_parameters, total_parameters=run.total_parameters)
    if state.history:
        results["train_loss"] = state.history[-1].get("loss")
    if state.best_epoch is not None:
        results["best_epoch"] = state.best_epoch
    return results


def _fit_remaining_epochs(run: FineTuneRun, state: RunState, uploader: Optional[HubUploader],
                          extra_callbacks: list[tf_keras.callbacks.Callback]) -> None:
    """Train from the state's position to the last epoch: a resumed epoch first (its remaining batches, in their
    place in the epoch's order), then the whole epochs; `extra_callbacks` come after the run's own."""
    config = run.config
    run.first_epoch = state.epoch
    if state.step_in_epoch:
        rest = run.batches(run.splits["train"].features, training=True, skip_batches=state.step_in_epoch)
        callbacks = build_callbacks(run, state, checkpoint=True, batch_offset=state.step_in_epoch,
                                    restore_best=False, uploader=uploader)
        _keras_fit(run, rest, state.epoch + 1, state.epoch, [*callbacks, *extra_callbacks])
        run.first_epoch = state.epoch
    if state.epoch < config.num_train_epochs and not state.stopped_early:
        _keras_fit(run, run.train_dataset, config.num_train_epochs, state.epoch,
                   [*build_callbacks(run, state, checkpoint=True, uploader=uploader), *extra_callbacks])
    elif config.load_best_model_at_end:  # the last epoch is done, or the run stopped early
        restore_best_weights(run.model, run.checkpoint_dir, state)


def _keras_fit(run: FineTuneRun, dataset: tf.data.Dataset, epochs: int, initial_epoch: int,
               callbacks: list[tf_keras.callbacks.Callback]) -> None:
    """model.fit, then the signal handlers put back however it ended (Keras skips on_train_end on an exception)."""
    try:
        run.model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                      verbose=keras_verbosity(run.config.verbose))
    finally:
        for callback in callbacks:
            if isinstance(callback, CheckpointCallback):
                callback.restore_signal_handlers()


def _evaluate(run: FineTuneRun) -> tuple[dict[str, Any], dict[str, Any], float]:
    """The final validation results (with eval_samples), the task's files about them, and the seconds it took."""
    start = time.perf_counter()
    evaluation, eval_files = run.final_evaluation()
    return {**evaluation, "eval_samples": len(run.splits["validation"])}, eval_files, time.perf_counter() - start


def _save(run: FineTuneRun, results: dict[str, Any], eval_results: dict[str, Any],
          eval_files: dict[str, Any]) -> None:
    """Save the model (and its PyTorch weights with --hub_export pytorch) and the results files into output_dir."""
    output_dir = run.config.output_dir
    run.save()
    if run.config.hub_export == "pytorch":
        logger.info("Wrote the PyTorch weights to %s.", add_pytorch_weights(output_dir))
    write_json(os.path.join(output_dir, EVAL_RESULTS_FILE), eval_results)
    for name, data in eval_files.items():
        write_json(os.path.join(output_dir, name), data)
    write_json(os.path.join(output_dir, RESULTS_FILE), results)
    logger.info("Results: %s", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in results.items()))


def _report(config: TrainConfig, run: FineTuneRun, state: RunState, results: dict[str, Any], started_at: str,
            eval_runtime: Optional[float], uploader: Optional[HubUploader]) -> None:
    """Write run_info.json, the report and the model card, and close the trackers with the results."""
    output_dir = config.output_dir
    monitor = (run.monitor, run.greater_is_better) if config.do_eval else (None, None)
    write_run_info(output_dir, run_info(run.strategy, started_at, *monitor, eval_runtime))
    _write_report(output_dir)
    repo_id = uploader.repo_id if uploader else config.hub_model_id or os.path.basename(os.path.abspath(output_dir))
    write_model_card_for_run(output_dir, repo_id)
    run.trackers.finish(results, step=state.global_step, model_folder=output_dir)


def _upload(uploader: HubUploader, output_dir: str) -> None:
    """Push the finished run folder and wait for the upload; a failed upload is a warning (the run is complete
    locally) naming the command that uploads it."""
    uploader.push("End of training")
    if uploader.wait():
        logger.info("Pushed %s to the Hub as %s.", output_dir, uploader.repo_id)
    else:
        logger.warning("The Hub upload did not complete (%s); the run is complete locally. Upload it with: %s",
                       uploader.last_error, push_command(output_dir, uploader.repo_id))


def summary_line(results: dict[str, Any], monitor: str, seconds: float, output_dir: str) -> str:
    """The run's last line: its main result (the metric that picks the best epoch) and where everything went."""
    minutes, rest = divmod(round(seconds), 60)
    took = f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
    if monitor in results:
        best = f" (best epoch {results['best_epoch']})" if "best_epoch" in results else ""
        return f"Done in {took}: {monitor} = {results[monitor]:.4f}{best}. Model, results and report in {output_dir}"
    return f"Done in {took}. Model and results in {output_dir}"


def _write_report(output_dir: str) -> None:
    """Write the run's curves and report; a failure (e.g. of plotting) is a warning: the results are already saved."""
    try:
        write_report(output_dir)
    except Exception as error:  # noqa: BLE001 - whatever goes wrong, the finished run must stand
        logger.warning("Could not write the run report (%s: %s); the results are saved. Rebuild it with: "
                       "python -m tf_finetune.report %s", type(error).__name__, error, output_dir)


def _hub_uploader(config: TrainConfig) -> HubUploader:
    """Check the token and repository now, so a bad token fails in seconds rather than after training."""
    repo_id = check_push_access(config.hub_model_id, config.output_dir, config.hub_token, config.hub_private_repo)
    return HubUploader(config.output_dir, repo_id, config.hub_token)

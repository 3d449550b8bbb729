"""The Python API: `FineTuneRun` builds a run step by step (for notebooks); `train` does the whole job."""
from __future__ import annotations

import gc
import inspect
import logging
import math
import os
import shutil
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tf_keras
from datasets import Dataset
from transformers import PretrainedConfig
from transformers.modeling_tf_utils import find_labels

from tf_finetune.accumulation import accumulate_gradients
from tf_finetune.baseline import features_baseline
from tf_finetune.batching import example_lengths, length_grouped_dataset
from tf_finetune.callbacks import (BestModelCallback, CheckpointCallback, DivergenceGuard, EvaluationCallback,
                                   HistoryCallback, HubPushCallback, keras_verbosity, progress_callbacks,
                                   restore_best_weights)
from tf_finetune.checkpoints import (RunState, discard_after, dropout_generators, latest_checkpoint,
                                     read_checkpoint_state, restore_checkpoint)
from tf_finetune.config import TrainConfig, field_fact
from tf_finetune.distribute import (describe_strategy, is_chief, needs_static_shapes, pad_multiple, precision_policy,
                                    resolve_strategy, static_shape_dataset, use_xla, with_input_options,
                                    with_loss_scaling, worker_scratch_dir)
from tf_finetune.errors import UserError
from tf_finetune.export import PYTORCH_DIR, add_pytorch_weights
from tf_finetune.hub import HubUploader, check_push_access, push_command, write_model_card_for_run
from tf_finetune.lora import add_lora, merged, parameter_counts, settings_for
from tf_finetune.lora_files import ADAPTER_DIR, LoraAdapter
from tf_finetune.models import (check_auto_class, check_model_fits, load_model, load_model_config, load_tokenizer,
                                max_model_length)
from tf_finetune.optimizer import build_optimizer
from tf_finetune.outputs import (check_free_space, check_output_dir, read_json, save_pretrained_atomic,
                                 write_json)
from tf_finetune.report import REPORT_FILES, write_report
from tf_finetune.run_info import now, run_info, write_run_info
from tf_finetune.step_log import LOG_HISTORY_FILE, StepLogCallback
from tf_finetune.tasks import get_task
from tf_finetune.tasks.base import CONFUSION_MATRIX_FILE, Task, TaskSplit, lower_is_better
from tf_finetune.trackers import TrackerCallback, build_trackers, logging_dir, remove_run_logs

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
RESULTS_FILE = "all_results.json"


class FineTuneRun:
    """A model, its tokenizer, tokenised splits as `tf.data`, an optimizer and callbacks, from one TrainConfig.

    Example (a notebook; README.md and examples/quickstart.ipynb show a whole TrainConfig):
        run = FineTuneRun(TrainConfig.from_file("run_config.json"))  # e.g. the configuration of an earlier run
        run.compile()
        history = run.model.fit(run.train_dataset, epochs=1, callbacks=run.callbacks())
        run.evaluate()
    """

    def __init__(self, config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None):
        """`self.config` is `config` with XLA and padding settled for the strategy (see tf_finetune.distribute).

        Building a run clears tf-keras' global session first: a notebook that builds run after run keeps the memory
        of one (earlier runs' models still work, they only lose Keras' cached graph state)."""
        config.validate()
        self.trackers = build_trackers(config)  # --report_to's trackers, unstarted (a missing package fails here)
        tf_keras.backend.clear_session()
        gc.collect()
        self.config = config
        self.task = get_task(config.task)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.tokenizer = load_tokenizer(config.tokenizer_name or config.model_name_or_path)
        raw_datasets = self.task.load_raw_datasets(config)
        self.model_config = load_model_config(config.model_name_or_path,
                                              **self.task.model_config_kwargs(raw_datasets, config))
        check_auto_class(self.task.auto_model_class, config.model_name_or_path, self.model_config)
        if config.features_baseline:  # a task without the baseline fails now, not after loading the model
            self.task.features_baseline_scorer(config, self.model_config)
        check_model_fits(config.model_name_or_path, self.model_config, self.tokenizer, any(
            self.task.builds_architecture(name) for name in self.model_config.architectures or []))
        limit = max_model_length(self.model_config, self.tokenizer)
        if config.max_seq_length > limit:
            raise UserError(f"--max_seq_length {config.max_seq_length} is more than {config.model_name_or_path} "
                            f"accepts ({limit}); pass --max_seq_length {limit} or less.")
        xla = use_xla(config.jit_compile, self.strategy)
        self.config = config = config.replace(jit_compile=xla,
                                              pad_to_multiple_of=pad_multiple(config, xla, self.strategy, limit))
        self.splits = self.task.tokenize(raw_datasets, self.tokenizer, config)
        self._check_splits()
        if "validation" in self.splits:  # longest first: batches padded little, and a memory error shows at once
            self.splits["validation"], _ = sorted_by_length(self.splits["validation"],
                                                            self.task.one_feature_per_example)
        # Dropout draws from a tf.random.Generator per layer, whose state is a variable that checkpoints save: a
        # resumed run drops the units the uninterrupted one would have (legacy stateful ops restart their streams).
        tf_keras.backend.experimental.enable_tf_random_generator()
        tf_keras.utils.set_random_seed(config.seed)
        with self.strategy.scope(), precision_policy(config.mixed_precision):
            self.model = load_model(self.task.auto_model_class, config.model_name_or_path, self.model_config)
            self.lora = settings_for(config, self.model) if config.lora_rank else None
            if self.lora:
                adapted = add_lora(self.model, self.lora)
                logger.info("LoRA: rank %d, alpha %g on %d layers (%s); trained in full: %s.", self.lora.rank,
                            self.lora.alpha, len(adapted), ", ".join(self.lora.target_modules),
                            ", ".join(self.lora.modules_to_save) or "nothing")
            self.dropout_generators = dropout_generators(self.model)  # LoRA's dropout layers included
        self.trainable_parameters, self.total_parameters = parameter_counts(self.model)
        logger.info("Trainable parameters: %s of %s (%.2f%%).", f"{self.trainable_parameters:,}",
                    f"{self.total_parameters:,}", 100 * self.trainable_parameters / self.total_parameters)
        if config.gradient_accumulation_steps > 1:
            accumulate_gradients(self.model, config.gradient_accumulation_steps)
        self.first_epoch = 0  # the epoch the next pass over train_dataset is (length grouping orders by epoch)
        self.train_dataset = self.tf_dataset("train", training=True) if "train" in self.splits else None
        self.eval_dataset = self.tf_dataset("validation", training=False) if "validation" in self.splits else None
        self.monitor, self.greater_is_better = resolve_monitor(config, self.task, self.model_config)
        if config.do_eval:
            keys = self.task.result_keys(config, self.model_config)
            if self.monitor not in keys:
                raise UserError(f"metric_for_best_model {self.monitor!r} is not among the validation results "
                                f"({', '.join(keys)}); pass one of them to --metric_for_best_model.")

    @property
    def global_train_batch_size(self) -> int:
        """Examples per optimizer step over all replicas (and accumulated micro-batches)."""
        return (self.config.per_device_train_batch_size * self.strategy.num_replicas_in_sync *
                self.config.gradient_accumulation_steps)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return int(self.train_dataset.cardinality().numpy())

    def tf_dataset(self, split: str, training: bool) -> tf.data.Dataset:
        """A split's features as batched `tf.data` (see `batches`)."""
        return self.batches(self.splits[split].features, training)

    def batches(self, features: Dataset, training: bool, skip_batches: int = 0) -> tf.data.Dataset:
        """Features as batched `tf.data`, collated by the task (dynamic padding; fixed shapes from tensors on TPUs),
        sharded by element across workers. A training batch holds every micro-batch of one optimizer step. Training
        batches are in an order fixed by (seed, epoch): length-grouped, or random with --group_by_length false.

        Only the columns the model takes (its inputs and labels) reach the collator: the task's bookkeeping columns
        (example ids, offsets, ...) stay behind in the split's features. `skip_batches`: training batches of one
        resumed epoch, without the first ones (see length_grouped_dataset).
        """
        batch_size = (self.global_train_batch_size if training
                      else self.config.per_device_eval_batch_size * self.strategy.num_replicas_in_sync)
        collate_fn = self.task.collator(self.tokenizer, self.config, training)
        features = model_columns(self.model, features)
        if needs_static_shapes(self.strategy):
            if skip_batches:
                raise UserError("this checkpoint is from the middle of an epoch, and TPU input cannot resume there "
                                "yet; pass --resume_from_checkpoint with an end-of-epoch checkpoint.")
            dataset = static_shape_dataset(self.model, features, collate_fn, batch_size, shuffle=training,
                                           drop_remainder=training, seed=self.config.seed)
        elif training:
            # A smaller last batch cannot be split into micro-batches, nor always over several replicas.
            uneven_ok = self.config.gradient_accumulation_steps == 1 and self.strategy.num_replicas_in_sync == 1
            window = self.config.length_grouping_window if self.config.group_by_length else 1  # 1: random batches
            dataset = length_grouped_dataset(features, collate_fn, find_labels(type(self.model)), batch_size,
                                             window, self.config.seed, drop_remainder=not uneven_ok,
                                             first_epoch=lambda: self.first_epoch, skip_batches=skip_batches)
        else:
            dataset = self.model.prepare_tf_dataset(features, batch_size=batch_size, shuffle=False,
                                                    collate_fn=collate_fn)
        return with_input_options(dataset)

    def compile(self) -> None:
        """Compile with AdamWeightDecay (linear warm-up and decay) and the model's built-in loss."""
        total_steps = self.steps_per_epoch * self.config.num_train_epochs
        warmup_steps = self.config.warmup_steps or math.ceil(total_steps * self.config.warmup_ratio)
        with self.strategy.scope():
            optimizer = build_optimizer(self.config.learning_rate, total_steps, warmup_steps, self.config.weight_decay,
                                        self.config.adam_epsilon, self.config.max_grad_norm,
                                        lazy=self.config.lazy_embedding_updates)
            optimizer = with_loss_scaling(optimizer, self.config.mixed_precision)
            self.model.compile(optimizer=optimizer, jit_compile=self.config.jit_compile)

    def callbacks(self, state: Optional[RunState] = None, checkpoint: bool = False, batch_offset: int = 0,
                  restore_best: bool = True) -> list[tf_keras.callbacks.Callback]:
        """The run's callbacks in order: metrics, best model / early stop, history, the task's own, divergence guard,
        per-step log and trackers, checkpoints (with `checkpoint`, as --save_strategy says; `batch_offset`: batches
        of a resumed epoch trained before), progress lines off a terminal. `restore_best` false: the best weights
        are not put back when this fit ends (more training follows)."""
        state = state or RunState()
        output_dir = self.config.output_dir
        callbacks: list[tf_keras.callbacks.Callback] = []
        if self.eval_dataset is not None and self.config.do_eval:
            callbacks.append(EvaluationCallback(self.evaluate))
            callbacks.append(BestModelCallback(
                state, self.monitor, self.greater_is_better, os.path.join(output_dir, CHECKPOINT_DIR),
                patience=self.config.early_stopping_patience,
                restore=self.config.load_best_model_at_end and restore_best))
        callbacks.append(HistoryCallback(state, output_dir))
        callbacks += self.task.training_callbacks(self.tokenizer, self.splits, self.config)
        callbacks.append(DivergenceGuard(state))
        callbacks += self.logging_callbacks(state, resumed_epoch=batch_offset > 0)
        if checkpoint:
            callbacks.append(CheckpointCallback(
                state, os.path.join(output_dir, CHECKPOINT_DIR), self.checkpoint(),
                save=self.config.save_strategy != "no",
                save_steps=self.config.save_steps if self.config.save_strategy == "steps" else None,
                total_limit=self.config.save_total_limit, save_on_signal=self.config.save_on_signal,
                batch_offset=batch_offset))
        callbacks += progress_callbacks(self.config.verbose, batch_offset)
        return callbacks

    def logging_callbacks(self, state: RunState, resumed_epoch: bool = False) -> list[tf_keras.callbacks.Callback]:
        """The per-step log (log_history.json), then the trackers it and each epoch's results feed (`resumed_epoch`:
        the first epoch goes on from a mid-epoch checkpoint)."""
        step_log = StepLogCallback(state, self.config.output_dir, self.config.logging_steps, self.steps_per_epoch,
                                   resumed_epoch)
        return [step_log, TrackerCallback(self.trackers, state)] if self.trackers else [step_log]

    def checkpoint(self) -> tf.train.Checkpoint:
        """What a checkpoint holds of TensorFlow's state: model, optimizer, and the global and dropout generators."""
        return tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer,
                                   generator=tf.random.get_global_generator(), dropout=self.dropout_generators)

    def evaluate(self) -> dict[str, float]:
        """The task's validation results (`eval_*` keys)."""
        return self.task.evaluate(self.model, self.eval_dataset, self.splits["validation"], self.config)

    def final_evaluation(self) -> tuple[dict[str, float], dict[str, Any]]:
        """The task's validation results and its files about them ({file name: JSON data}, e.g. a confusion
        matrix), for the end of a run."""
        return self.task.final_evaluation(self.model, self.eval_dataset, self.splits["validation"], self.config)

    def predict(self) -> Any:
        """The task's predictions for the test split, in the split's order. The model sees the split sorted by length
        (longest first), so batches are padded little; per-example predictions are put back in order."""
        paired = self.task.one_feature_per_example
        split, order = sorted_by_length(self.splits["test"], paired)
        predictions = self.task.predict(self.model, self.batches(split.features, training=False), split, self.config)
        return [predictions[i] for i in np.argsort(order)] if paired else predictions

    def write_predictions(self) -> str:
        """Predict the test split and write the task's prediction file into output_dir; returns its path."""
        return self.task.write_predictions(self.predict(), self.splits["test"], self.config.output_dir, self.config)

    def save(self, output_dir: Optional[str] = None) -> None:
        """`save_pretrained` the model and tokenizer, atomically, loadable with `from_pretrained`.

        With LoRA the model is saved with its adapters merged (or, with lora_merge false, only its config), and
        `adapter/` holds the adapter in the PEFT format.
        """
        output_dir = output_dir or self.config.output_dir
        if self.lora is None:
            save_pretrained_atomic(output_dir, self.tokenizer, self.model)
            return
        adapter = LoraAdapter.from_model(self.model, self.lora, self.config.model_name_or_path,
                                         self.task.peft_task_type)
        if not self.config.lora_merge:
            self.model.config.architectures = [type(self.model).__name__[len("TF"):]]  # as save_pretrained sets it
            save_pretrained_atomic(output_dir, self.tokenizer, self.model.config, adapter)
            return
        with merged(self.model):
            save_pretrained_atomic(output_dir, self.tokenizer, self.model, adapter)

    def _check_splits(self) -> None:
        needed = (["train"] if self.config.do_train else []) + (["validation"] if self.config.do_eval else [])
        for split in needed:
            if split not in self.splits:
                raise UserError(f"the data has no {split} split; pass the matching --{split}_file.".replace(
                    "--validation_file", "--validation_file (or --do_eval false)"))
            if len(self.splits[split].features) == 0:
                raise UserError(f"the {split} split is empty; check the data and --max_*_samples.")
        if self.config.do_predict and "test" not in self.splits:
            raise UserError("--do_predict needs a test split; pass --test_file (GLUE: test.tsv in --data_dir).")
        if self.config.do_train:
            batch, rows = self.global_train_batch_size, len(self.splits["train"].features)
            if rows < batch:
                raise UserError(f"the train split has {rows} training rows, fewer than one batch "
                                f"({batch}); lower --per_device_train_batch_size (or --gradient_accumulation_steps).")


def sorted_by_length(split: TaskSplit, paired: bool) -> tuple[TaskSplit, np.ndarray]:
    """The split with its features sorted by length, longest first (and its examples with them when `paired`:
    feature i belongs to example i), and the order: row i of the result is row order[i] of the split."""
    order = np.argsort(-example_lengths(split.features), kind="stable")
    features = split.features.select(order)
    if split.examples is split.features:
        return TaskSplit(features, features), order
    return TaskSplit(split.examples.select(order) if paired else split.examples, features), order


def model_columns(model: tf_keras.Model, features: Dataset) -> Dataset:
    """The feature columns the model takes: its call's inputs and its labels (all others are bookkeeping)."""
    taken = set(inspect.signature(model.call).parameters) | set(find_labels(type(model)))
    return features.remove_columns([column for column in features.column_names if column not in taken])


def resolve_monitor(config: TrainConfig, task: Task, model_config: PretrainedConfig) -> tuple[str, bool]:
    """The validation result that picks the best epoch (a result key of the task, e.g. `eval_f1`; a bare metric name
    means `eval_<name>` unless the task reports it unprefixed) and whether larger values are better."""
    task_metric, task_greater = task.main_metric(config, model_config)
    name = config.metric_for_best_model or task_metric
    if not name.startswith("eval_") and name not in task.result_keys(config, model_config):
        name = f"eval_{name}"
    greater = config.greater_is_better
    if greater is None:
        greater = task_greater if name == task_metric else not lower_is_better(name)
    return name, greater


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
        return _train(config, strategy, extra_callbacks, extra_results)
    resume_entries = () if config.overwrite_output_dir else (CHECKPOINT_DIR, RESULTS_FILE)
    with worker_scratch_dir(config.output_dir, resume_entries) as scratch:
        # The chief alone reports, uploads and measures the baseline; --logging_dir may be the chief's own folder.
        worker = config.replace(output_dir=scratch, push_to_hub=False, report_to=["none"], logging_dir=None,
                                features_baseline=False, hub_export="none")
        return _train(worker, strategy, extra_callbacks, extra_results)


def _train(config: TrainConfig, strategy: tf.distribute.Strategy,
           extra_callbacks: Optional[list[tf_keras.callbacks.Callback]],
           extra_results: Optional[dict[str, Any]]) -> dict[str, Any]:
    """`train` on this worker, writing into config.output_dir; its trackers are closed at the end, as failed when
    anything after the run was built fails (or is interrupted)."""
    started = time.perf_counter()
    output_dir = config.output_dir
    checkpoint_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    started_at = now()
    check_output_dir(output_dir)
    state = _resume_state(config, checkpoint_dir)
    run = FineTuneRun(config, strategy)  # checks the data and the model before anything is removed or created
    try:
        results = _run(config, run, state, started_at, extra_callbacks, extra_results)
    except BaseException:
        run.trackers.finish(failed=True)
        raise
    logger.info(summary_line(results, run.monitor, time.perf_counter() - started, output_dir))
    return results


def _run(config: TrainConfig, run: FineTuneRun, state: RunState, started_at: str,
         extra_callbacks: Optional[list[tf_keras.callbacks.Callback]],
         extra_results: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Train (resuming from `state`), evaluate, save, report and upload the run built from `config` (as given, not
    as the run settled it: run_config.json keeps what the user asked for); returns its results."""
    strategy = run.strategy
    output_dir = config.output_dir
    checkpoint_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    if config.check_disk_space and config.do_train:
        weights = sum(int(np.prod(w.shape)) * w.dtype.size for w in run.model.weights)
        optimizer_state = 2 * sum(int(np.prod(w.shape)) * w.dtype.size for w in run.model.trainable_weights)
        kept = (config.save_total_limit or 1) + 1  # the checkpoints kept, and the one being written
        check_free_space(output_dir, kept * (weights + optimizer_state))
    # Before training (and before a checkpoint is restored), while the encoder is still the pretrained one.
    baseline_results = features_baseline(run) if config.features_baseline else {}
    if config.do_train:
        run.compile()
        if state.checkpoint_path:  # before anything is written: a checkpoint of another model fails here
            restore_checkpoint(run.checkpoint(), state)
            discard_after(checkpoint_dir, state.global_step)
            logger.info("Resuming from %s: epoch %d of %d, %d of its %d steps done.", state.checkpoint_path,
                        state.epoch + 1, config.num_train_epochs, state.step_in_epoch, run.steps_per_epoch)
    if config.overwrite_output_dir:
        _remove_previous_run(output_dir)
        remove_run_logs(logging_dir(config))
    uploader = _hub_uploader(config) if config.push_to_hub else None
    callbacks = [HubPushCallback(run.save, uploader)] if uploader and config.hub_strategy == "epoch" else []
    write_json(os.path.join(output_dir, "run_config.json"), config.to_dict())
    results: dict[str, Any] = {}
    if config.do_train:
        start, start_step = time.perf_counter(), state.global_step
        if state.epoch < config.num_train_epochs and not state.stopped_early:
            _fit(run, state, callbacks + list(extra_callbacks or []))
        elif config.load_best_model_at_end:
            restore_best_weights(run.model, checkpoint_dir, state)
        runtime = time.perf_counter() - start
        samples = (state.global_step - start_step) * run.global_train_batch_size
        results.update(epoch=state.epoch, train_samples=len(run.splits["train"]), train_runtime=round(runtime, 3),
                       train_samples_per_second=round(samples / runtime, 3) if runtime > 0 and samples else 0.0,
                       trainable_parameters=run.trainable_parameters, total_parameters=run.total_parameters)
        if state.history:
            results["train_loss"] = state.history[-1].get("loss")
        if state.best_epoch is not None:
            results["best_epoch"] = state.best_epoch
    eval_results: dict[str, Any] = {}
    eval_files: dict[str, Any] = {}
    eval_runtime = None
    if config.do_eval:
        start = time.perf_counter()
        evaluation, eval_files = run.final_evaluation()
        eval_runtime = time.perf_counter() - start
        eval_results = {**evaluation, "eval_samples": len(run.splits["validation"])}
        results.update(eval_results)
    results.update(baseline_results)
    if config.do_predict:
        logger.info("Wrote the test predictions to %s.", run.write_predictions())
    results.update(extra_results or {})
    run.save()
    if config.hub_export == "pytorch":
        logger.info("Wrote the PyTorch weights to %s.", add_pytorch_weights(output_dir))
    write_json(os.path.join(output_dir, "eval_results.json"), eval_results)
    for name, data in eval_files.items():
        write_json(os.path.join(output_dir, name), data)
    write_json(os.path.join(output_dir, RESULTS_FILE), results)
    logger.info("Results: %s", ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in results.items()))
    monitor = (run.monitor, run.greater_is_better) if config.do_eval else (None, None)
    write_run_info(output_dir, run_info(strategy, started_at, *monitor, eval_runtime))
    _write_report(output_dir)
    repo_id = uploader.repo_id if uploader else config.hub_model_id or os.path.basename(os.path.abspath(output_dir))
    write_model_card_for_run(output_dir, repo_id)
    run.trackers.finish(results, step=state.global_step, model_folder=output_dir)
    if uploader:
        uploader.push("End of training")
        if uploader.wait():
            logger.info("Pushed %s to the Hub as %s.", output_dir, uploader.repo_id)
        else:
            logger.warning("The Hub upload did not complete (%s); the run is complete locally. Upload it with: %s",
                           uploader.last_error, push_command(output_dir, uploader.repo_id))
    return results


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


def _fit(run: FineTuneRun, state: RunState, extra_callbacks: list[tf_keras.callbacks.Callback]) -> None:
    """Train from the state's position to the last epoch: a resumed epoch first (its remaining batches, in their
    place in the epoch's order), then the whole epochs."""
    config = run.config
    run.first_epoch = state.epoch
    if state.step_in_epoch:
        rest = run.batches(run.splits["train"].features, training=True, skip_batches=state.step_in_epoch)
        callbacks = run.callbacks(state, checkpoint=True, batch_offset=state.step_in_epoch, restore_best=False)
        _fit_with(run, rest, state.epoch + 1, state.epoch, [*callbacks, *extra_callbacks])
        run.first_epoch = state.epoch
    if state.epoch < config.num_train_epochs and not state.stopped_early:
        _fit_with(run, run.train_dataset, config.num_train_epochs, state.epoch,
                  [*run.callbacks(state, checkpoint=True), *extra_callbacks])
    elif config.load_best_model_at_end:  # the resumed epoch was the last one, or stopped the run early
        restore_best_weights(run.model, os.path.join(config.output_dir, CHECKPOINT_DIR), state)


def _fit_with(run: FineTuneRun, dataset: tf.data.Dataset, epochs: int, initial_epoch: int,
              callbacks: list[tf_keras.callbacks.Callback]) -> None:
    """model.fit, then the signal handlers put back however it ended (Keras skips on_train_end on an exception)."""
    try:
        run.model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                      verbose=keras_verbosity(run.config.verbose))
    finally:
        for callback in callbacks:
            if isinstance(callback, CheckpointCallback):
                callback.restore_signal_handlers()


def _hub_uploader(config: TrainConfig) -> HubUploader:
    """Check the token and repository now, so a bad token fails in seconds rather than after training."""
    repo_id = check_push_access(config.hub_model_id, config.output_dir, config.hub_token, config.hub_private_repo)
    return HubUploader(config.output_dir, repo_id, config.hub_token)


def _resume_state(config: TrainConfig, checkpoint_dir: str) -> RunState:
    """The state to start from: fresh, or an interrupted run's, whose settings must match; never a finished run's."""
    output_dir = config.output_dir
    if config.overwrite_output_dir:
        return RunState()
    if os.path.isfile(os.path.join(output_dir, RESULTS_FILE)):
        raise UserError(f"{output_dir} already holds a finished run ({RESULTS_FILE}); pass --overwrite_output_dir "
                        "or another --output_dir.")
    if config.resume_from_checkpoint:
        state = read_checkpoint_state(config.resume_from_checkpoint)
    else:
        folder = latest_checkpoint(checkpoint_dir)
        state = read_checkpoint_state(folder, checked=True) if folder else None
    saved_config = os.path.join(output_dir, "run_config.json")
    if state and os.path.isfile(saved_config):
        saved, current = read_json(saved_config), config.to_dict()
        changed = [name for name in current
                   if field_fact(name, "changes_training") and saved.get(name) != current[name]]
        if changed:
            name = changed[0]
            raise UserError(f"{output_dir} holds an interrupted run with other settings ({name}: {saved.get(name)!r} "
                            f"then, {current[name]!r} now); rerun it as it was to resume, or pass "
                            "--overwrite_output_dir.")
    return state or RunState()


def _remove_previous_run(output_dir: str) -> None:
    """Remove what an earlier run left in output_dir (checkpoints, results, predictions, generations, model card,
    weights and adapter: a run saved as config + adapter must not find an earlier run's weights beside it)."""
    if not os.path.isdir(output_dir):
        return
    for folder in (CHECKPOINT_DIR, ADAPTER_DIR, PYTORCH_DIR):
        shutil.rmtree(os.path.join(output_dir, folder), ignore_errors=True)
    leftovers = ["README.md", "eval_results.json", RESULTS_FILE, "history.json", "history.csv", "tf_model.h5",
                 CONFUSION_MATRIX_FILE, LOG_HISTORY_FILE, *REPORT_FILES]
    leftovers += [name for name in os.listdir(output_dir) if name.startswith(("predict_results_", "generations_"))]
    for name in leftovers:
        if os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))

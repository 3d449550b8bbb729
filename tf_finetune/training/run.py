"""`FineTuneRun`: a model, its preprocessor, tokenised splits as `tf.data`, an optimizer and callbacks, from one TrainConfig (for notebooks; `train` does the whole job)."""
from __future__ import annotations

import gc
import inspect
import logging
import math
import os
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tf_keras
from datasets import Dataset, DatasetDict
from transformers import PretrainedConfig
from transformers.modeling_tf_utils import find_labels

from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.core.files import save_pretrained_atomic
from tf_finetune.core.layout import CHECKPOINT_DIR
from tf_finetune.data.batching import example_lengths, length_grouped_dataset
from tf_finetune.models.adapters import LoraAdapter
from tf_finetune.models.families import family_of
from tf_finetune.models.loading import (
    check_auto_class,
    check_gradient_checkpointing,
    check_model_fits,
    load_model,
    load_model_config,
)
from tf_finetune.models.lora import add_lora, merged, parameter_counts, settings_for
from tf_finetune.runtime.accumulation import accumulate_gradients
from tf_finetune.runtime.checkpoints import RunState, dropout_generators
from tf_finetune.runtime.distribute import (
    needs_static_shapes,
    pad_multiple,
    precision_policy,
    resolve_strategy,
    static_shape_dataset,
    use_xla,
    with_input_options,
    with_loss_scaling,
)
from tf_finetune.runtime.optimizer import build_optimizer
from tf_finetune.tasks import get_task
from tf_finetune.tasks.base import RunContext, Task, TaskSplit, lower_is_better
from tf_finetune.training.callback_list import build_callbacks
from tf_finetune.training.trackers import build_trackers

logger = logging.getLogger(__name__)



class FineTuneRun:
    """A model, its preprocessor, preprocessed splits as `tf.data`, an optimizer and callbacks, from one TrainConfig.

    Example (a notebook; README.md and examples/quickstart.ipynb show a whole TrainConfig):
        run = FineTuneRun(TrainConfig.from_file("run_config.json"))  # e.g. the configuration of an earlier run
        run.compile()
        history = run.model.fit(run.train_dataset, epochs=1, callbacks=run.callbacks())
        run.evaluate()
    """

    def __init__(self, config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None):
        """`self.config` is `config` with XLA and padding settled for the strategy: `strategy`, or the one
        config.strategy asks for (see tf_finetune.runtime.distribute).

        Building a run clears tf-keras' global session first: a notebook that builds run after run keeps the memory
        of one (earlier runs' models still work, they only lose Keras' cached graph state)."""
        config.validate()
        self.trackers = build_trackers(config)  # --report_to's trackers, unstarted (a missing package fails here)
        tf_keras.backend.clear_session()
        gc.collect()
        self.config = config
        self.task = get_task(config.task)
        self.strategy = strategy or resolve_strategy(config)
        raw_datasets = self._load_data_and_model_config()
        max_length = self._check_model_fits()
        self._settle_xla_and_padding(max_length)
        self._tokenize(raw_datasets)
        self._build_model()
        self._build_datasets()
        self._choose_monitor()

    def _load_data_and_model_config(self) -> DatasetDict:
        """Load the task's preprocessor and the model's config (shaped by the data, e.g. its labels); returns the raw
        splits."""
        config = self.config
        self.preprocessor = self.task.load_preprocessor(config.tokenizer_name or config.model_name_or_path)
        raw_datasets = self.task.load_raw_datasets(config)
        self.model_config = load_model_config(config.model_name_or_path,
                                              **self.task.model_config_kwargs(raw_datasets, config))
        return raw_datasets

    def _check_model_fits(self) -> int:
        """Check, before any weights load, that the task can use the model (its class and size, the baseline asked
        for) and that --max_seq_length fits it; returns the longest input the model takes."""
        config = self.config
        check_auto_class(self.task.auto_model_class, config.model_name_or_path, self.model_config)
        if config.gradient_checkpointing:
            check_gradient_checkpointing(self.task.auto_model_class, config.model_name_or_path, self.model_config)
        family_of(self.model_config.model_type).check_mixed_precision(config.mixed_precision,
                                                                      config.model_name_or_path)
        if config.features_baseline:  # a task without the baseline fails now, not after loading the model
            self.task.features_baseline_scorer(config, self.model_config)
        check_model_fits(config.model_name_or_path, self.model_config, any(
            self.task.builds_architecture(name) for name in self.model_config.architectures or []))
        return self.task.check_preprocessor(self.preprocessor, self.model_config, config)

    def _settle_xla_and_padding(self, max_length: int) -> None:
        """Settle XLA for the strategy, and the padding multiple that keeps its input shapes few, in self.config."""
        config = self.config
        xla = use_xla(config.jit_compile, self.strategy)
        self.config = config.replace(jit_compile=xla,
                                     pad_to_multiple_of=pad_multiple(config, xla, self.strategy, max_length))

    def _tokenize(self, raw_datasets: DatasetDict) -> None:
        """Tokenise the splits the task's way and check them (see _check_splits)."""
        self.splits = self.task.tokenize(raw_datasets, self.preprocessor, self.config)
        self._check_splits()
        if "validation" in self.splits:  # longest first: batches padded little, and a memory error shows at once
            self.splits["validation"], _ = sorted_by_length(self.splits["validation"], self.task)

    def _build_model(self) -> None:
        """Load the model under the strategy and precision policy, seeded, with gradient checkpointing and LoRA's
        adapters when asked, and accumulating gradients over micro-batches when asked."""
        config = self.config
        # Dropout draws from a tf.random.Generator per layer, whose state is a variable that checkpoints save: a
        # resumed run drops the units the uninterrupted one would have (legacy stateful ops restart their streams).
        tf_keras.backend.experimental.enable_tf_random_generator()
        tf_keras.utils.set_random_seed(config.seed)
        with self.strategy.scope(), precision_policy(config.mixed_precision):
            self.model = load_model(self.task.auto_model_class, config.model_name_or_path, self.model_config)
            if config.gradient_checkpointing:
                self.model.gradient_checkpointing_enable()
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

    def _build_datasets(self) -> None:
        """train_dataset and eval_dataset as `tf.data` (None for a split the data lacks)."""
        self.first_epoch = 0  # the epoch the next pass over train_dataset is (length grouping orders by epoch)
        self.train_dataset = self.tf_dataset("train", training=True) if "train" in self.splits else None
        self.eval_dataset = self.tf_dataset("validation", training=False) if "validation" in self.splits else None

    def _choose_monitor(self) -> None:
        """The validation result that picks the best epoch and its direction (see resolve_monitor); with do_eval,
        one the task reports."""
        self.monitor, self.greater_is_better = resolve_monitor(self.config, self.task, self.model_config)
        if self.config.do_eval:
            keys = self.task.result_keys(self.config, self.model_config)
            if self.monitor in self.task.final_result_keys(self.config, self.model_config):
                raise UserError(f"metric_for_best_model {self.monitor!r} is computed only when training ends, so it "
                                f"cannot pick the best epoch; pass one of {', '.join(keys)} to "
                                "--metric_for_best_model.")
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

        Only the columns the model takes (its inputs and labels) and, in training, the task's `collator_columns`
        reach the collator: the task's bookkeeping columns (example ids, offsets, ...) stay behind in the split's
        features. `skip_batches`: training batches of one resumed epoch, without the first ones (see
        length_grouped_dataset).
        """
        batch_size = (self.global_train_batch_size if training
                      else self.config.per_device_eval_batch_size * self.strategy.num_replicas_in_sync)
        collate_fn = self.task.collator(self.preprocessor, self.config, training)
        features = model_columns(self.model, features, self.task.collator_columns if training else ())
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
                                             first_epoch=lambda: self.first_epoch, skip_batches=skip_batches,
                                             length_column=self.task.length_column)
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

    @property
    def checkpoint_dir(self) -> str:
        """The folder of the run's checkpoints and best-epoch weights."""
        return os.path.join(self.config.output_dir, CHECKPOINT_DIR)

    def callbacks(self, state: Optional[RunState] = None, checkpoint: bool = False, batch_offset: int = 0,
                  restore_best: bool = True) -> list[tf_keras.callbacks.Callback]:
        """The run's callbacks in their order, sharing `state` (a fresh one by default); see `build_callbacks`."""
        return build_callbacks(self, state or RunState(), checkpoint=checkpoint, batch_offset=batch_offset,
                               restore_best=restore_best)

    def checkpoint(self) -> tf.train.Checkpoint:
        """What a checkpoint holds of TensorFlow's state: model, optimizer, and the global and dropout generators."""
        return tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer,
                                   generator=tf.random.get_global_generator(), dropout=self.dropout_generators)

    @property
    def context(self) -> RunContext:
        """What the task's scoring and predictions get besides the config: the preprocessor and the model config."""
        return RunContext(self.preprocessor, self.model_config)

    def evaluate(self, epoch: Optional[int] = None) -> dict[str, float]:
        """The task's per-epoch validation results (`eval_*` keys), and after every final_results_every-th epoch
        (`epoch`: counted from 0) its final-only results too."""
        split, every = self.splits["validation"], self.task.final_results_every
        results = self.task.evaluate(self.model, self.eval_dataset, split, self.config, self.context)
        if epoch is not None and every and (epoch + 1) % every == 0:
            results.update(self.task.final_results(self.model, self.eval_dataset, split, self.config, self.context))
        return results

    def final_evaluation(self) -> tuple[dict[str, float], dict[str, Any]]:
        """The task's validation results, its final-only results, and its files about them ({file name: JSON data},
        e.g. a confusion matrix), for the end of a run."""
        split = self.splits["validation"]
        results, files = self.task.final_evaluation(self.model, self.eval_dataset, split, self.config, self.context)
        final = self.task.final_results(self.model, self.eval_dataset, split, self.config, self.context)
        return {**results, **final}, files

    def predict(self) -> Any:
        """The task's predictions for the test split, in the split's order. The model sees the split sorted by length
        (longest first), so batches are padded little; per-example predictions are put back in order."""
        paired = self.task.one_feature_per_example
        split, order = sorted_by_length(self.splits["test"], self.task)
        predictions = self.task.predict(self.model, self.batches(split.features, training=False), split, self.config,
                                        self.context)
        return [predictions[i] for i in np.argsort(order)] if paired else predictions

    def write_predictions(self) -> str:
        """Predict the test split and write the task's prediction file into output_dir; returns its path."""
        return self.task.write_predictions(self.predict(), self.splits["test"], self.config.output_dir, self.config)

    def save(self, output_dir: Optional[str] = None) -> None:
        """`save_pretrained` the model and preprocessor, atomically, loadable with `from_pretrained`.

        With LoRA the model is saved with its adapters merged (or, with lora_merge false, only its config), and
        `adapter/` holds the adapter in the PEFT format.
        """
        output_dir = output_dir or self.config.output_dir
        if self.lora is None:
            save_pretrained_atomic(output_dir, self.preprocessor, self.model)
            return
        adapter = LoraAdapter.from_model(self.model, self.lora, self.config.model_name_or_path,
                                         self.task.peft_task_type)
        if not self.config.lora_merge:
            self.model.config.architectures = [type(self.model).__name__[len("TF"):]]  # as save_pretrained sets it
            save_pretrained_atomic(output_dir, self.preprocessor, self.model.config, adapter)
            return
        with merged(self.model):
            save_pretrained_atomic(output_dir, self.preprocessor, self.model, adapter)

    def _check_splits(self) -> None:
        """The splits the run needs are there and not empty, and training has at least one batch."""
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


def sorted_by_length(split: TaskSplit, task: Task) -> tuple[TaskSplit, np.ndarray]:
    """The split with its features sorted by the task's length column, longest first (and its examples with them
    when feature i belongs to example i), and the order: row i of the result is row order[i] of the split. A task
    without a length column keeps the split's order."""
    if task.length_column is None:
        return split, np.arange(len(split.features))
    order = np.argsort(-example_lengths(split.features, task.length_column), kind="stable")
    features = split.features.select(order)
    if split.examples is split.features:
        return TaskSplit(features, features), order
    paired = task.one_feature_per_example
    return TaskSplit(split.examples.select(order) if paired else split.examples, features), order


def model_columns(model: tf_keras.Model, features: Dataset, extra: tuple[str, ...] = ()) -> Dataset:
    """The feature columns the model takes: its call's inputs and its labels (all others are bookkeeping), and the
    `extra` columns a task's collator takes besides."""
    taken = set(inspect.signature(model.call).parameters) | set(find_labels(type(model))) | set(extra)
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




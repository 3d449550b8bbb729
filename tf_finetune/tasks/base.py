"""What every task provides: how to read, preprocess, collate, model, score, name, write and predict one problem.

The trainer (`tf_finetune.training`), the callbacks and the predict command only talk to tasks through `Task`; none of them
names a task or branches on one.
"""
from __future__ import annotations

import abc
import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import write_text
from tf_finetune.core.layout import predictions_file

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset, DatasetDict
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig


@dataclass
class TaskSplit:
    """One split of a task's data, preprocessed.

    `examples` are what the split counts (texts, blocks, sentences, questions; `max_*_samples` applied) and what
    post-processing maps predictions back to. `features` are the model rows: model inputs and labels, plus any
    bookkeeping columns post-processing needs (example ids, offset mappings, ...). Only the columns the model takes
    (and the task's collator_columns) reach a collator, and only the model's inputs reach the model.
    """

    examples: "Dataset"
    features: "Dataset"

    def __len__(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class RunContext:
    """What a run loaded that its task's scoring and predictions may need besides the config: the preprocessor
    (e.g. to decode generated tokens) and the model config."""

    preprocessor: Any
    model_config: "PretrainedConfig"


class Task(abc.ABC):
    """A registered task. Subclasses set the class attributes and implement the abstract methods."""

    name: str
    auto_model_class: str  # a transformers TFAutoModelFor... class name
    pipeline_tag: str  # the Hub's task id for model cards and the predict command, e.g. "text-classification"
    predict_name: str | None = None  # its --task name in the predict command, when not its pipeline tag
    peft_task_type: str | None = None  # PEFT's task type for LoRA adapter files, e.g. "SEQ_CLS" (None: no type)
    # The TrainConfig fields that are options of this task: a field that is some task's option applies only to those
    # tasks' runs (the model card and report list it for them alone); a field that is no task's applies to every run.
    option_fields: tuple[str, ...] = ("max_seq_length",)  # the length text tasks truncate their inputs to
    # The feature column whose length sorts and groups batches (a list per row, or a list of lists, e.g. choices);
    # None: the features have no length (images, fixed-size arrays), so batches are neither sorted nor grouped.
    length_column: str | None = "input_ids"
    # Raw feature columns that reach the training collator besides the model's inputs and labels (e.g. what it
    # augments from); evaluation batches carry the model's inputs and labels only (transformers' prepare_tf_dataset).
    collator_columns: tuple[str, ...] = ()
    # Also compute the final-only results (final_result_keys) after every N-th epoch (None: only when training ends).
    final_results_every: int | None = None
    # Whether features[i] belongs to examples[i] (False: features name their example in a bookkeeping column, as
    # qa's windows do). Evaluation reorders a split by length, keeping that pairing.
    one_feature_per_example: bool = True
    description: str = ""  # one line, for --list_tasks
    data_formats: str = ""  # the files it reads, for --list_tasks
    reported_metrics: str = ""  # the results it reports, for --list_tasks

    # The preprocessor: what turns raw inputs into model inputs (a tokenizer, image processor or feature extractor)
    def load_preprocessor(self, name_or_path: str) -> Any:
        """The preprocessor saved at a checkpoint or run folder (runs save theirs with `save_pretrained`, so predict
        and export reload it from there). By default: the fast tokenizer."""
        from tf_finetune.models.loading import load_tokenizer

        return load_tokenizer(name_or_path)

    def check_preprocessor(self, preprocessor: Any, model_config: "PretrainedConfig", config: "TrainConfig") -> int:
        """Raise a UserError for a preprocessor or input length that does not fit the model, before training; returns
        the longest input the model accepts (what padding may reach). By default, for a tokenizer: no more tokens
        than the model's embeddings, and --max_seq_length within the model's limit."""
        from tf_finetune.models.loading import check_vocabulary, max_model_length

        check_vocabulary(config.model_name_or_path, model_config, preprocessor)
        limit = max_model_length(model_config, preprocessor)
        if config.max_seq_length > limit:
            raise UserError(f"--max_seq_length {config.max_seq_length} is more than {config.model_name_or_path} "
                            f"accepts ({limit}); pass --max_seq_length {limit} or less.")
        return limit

    # Reading and preprocessing
    @abc.abstractmethod
    def load_raw_datasets(self, config: "TrainConfig") -> "DatasetDict":
        """Raw splits named train / validation / test (those that exist), before preprocessing."""

    def model_config_kwargs(self, raw_datasets: "DatasetDict", config: "TrainConfig") -> dict[str, Any]:
        """Model config fields the task fixes (num_labels, id2label, problem_type, ...)."""
        return {}

    @abc.abstractmethod
    def tokenize(self, raw_datasets: "DatasetDict", preprocessor: Any, config: "TrainConfig") -> dict[str, TaskSplit]:
        """Each split's examples and features, made with the preprocessor through cached `datasets.map`."""

    @abc.abstractmethod
    def collator(self, preprocessor: Any, config: "TrainConfig", training: bool) -> Callable[[list[dict]], dict]:
        """Collates feature rows (the model's columns, and in training the collator_columns) into a NumPy batch of
        model inputs and labels, for `prepare_tf_dataset`."""

    # Scoring
    @abc.abstractmethod
    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        """The result key that picks the best epoch, and whether greater is better."""

    @abc.abstractmethod
    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        """The keys `evaluate` returns, known before training (loading the metrics, so a bad one fails early).

        Keys are named as the Hugging Face examples name them: `eval_<metric>`, or a bare name such as perplexity.
        """

    def final_result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        """Keys besides `result_keys` that only the finished run computes (`final_results`; also every
        final_results_every epochs), because they cost too much to compute after every epoch (e.g. a metric of
        generated text); the best epoch is never chosen on one. By default: none."""
        return []

    @abc.abstractmethod
    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig", context: RunContext) -> dict[str, float]:
        """Validation results under `result_keys` names; `tf_dataset` batches `split.features` in order. The split
        comes sorted by length (see length_column, one_feature_per_example), so the results must not depend on the
        rows' order."""

    def final_evaluation(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                         config: "TrainConfig", context: RunContext) -> tuple[dict[str, float], dict[str, Any]]:
        """The finished run's validation results (as `evaluate`) and the task's own files about them, as
        {file name: JSON data} that the run folder keeps (e.g. CONFUSION_MATRIX_FILE). By default: no files."""
        return self.evaluate(model, tf_dataset, split, config, context), {}

    def final_results(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit, config: "TrainConfig",
                      context: RunContext) -> dict[str, float]:
        """The `final_result_keys` results of the finished run's validation split (as `evaluate` gets it)."""
        return {}

    def hub_dataset(self, run_config: dict[str, Any]) -> tuple[str | None, str | None]:
        """The Hub dataset (id, configuration) a run with these settings (run_config.json) trained on, for its model
        card: --dataset_name's; (None, None) for local files."""
        return run_config.get("dataset_name"), run_config.get("dataset_config_name")

    def training_callbacks(self, preprocessor: Any, splits: dict[str, TaskSplit],
                           config: "TrainConfig") -> list[Any]:
        """Keras callbacks of the task's own that training adds after the run's (e.g. chat's generation samples)."""
        return []

    # The feature-extraction baseline (--features_baseline, see tf_finetune/training/baseline.py)
    def features_baseline_scorer(self, config: "TrainConfig",
                                 model_config: "PretrainedConfig") -> Callable[["np.ndarray", "np.ndarray"],
                                                                                dict[str, float]]:
        """A function scoring predicted class indices against labels with the task's validation metrics (`eval_*`
        keys, as `evaluate` names them). Raises UserError when the task has no such baseline."""
        raise UserError(f"--features_baseline fits a classifier on sentence features, and {self.name} is not a "
                        "classification task; drop --features_baseline.")

    # Predictions of --do_predict
    def predict(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit, config: "TrainConfig",
                context: RunContext) -> Any:
        """Predictions for the test split, in the form `write_predictions` takes. The split comes sorted by length;
        with one feature per example, return one prediction per example in the split's order (a sequence), which
        the caller puts back in the file's order."""
        raise UserError(f"{self.name} writes no test predictions; drop --do_predict and use "
                        "`python -m tf_finetune.predict` on the saved model.")

    def write_predictions(self, predictions: Sequence[str], split: TaskSplit, output_dir: str,
                          config: "TrainConfig") -> str:
        """Write `predict_results_<task>.txt` (index, prediction per example) atomically; returns its path."""
        path = os.path.join(output_dir, predictions_file(self.name, "txt"))
        lines = ["index\tprediction", *(f"{i}\t{p}" for i, p in enumerate(predictions))]
        write_text(path, "\n".join(lines) + "\n")
        return path

    # The predict command (`python -m tf_finetune.predict --task <pipeline_tag>`)
    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of its own that the predict command offers for this task's pipeline tag."""

    def predict_inputs(self, args: argparse.Namespace, preprocessor: Any) -> list[Any]:
        """The inputs to answer: by default the TEXT arguments followed by the non-blank lines of --file."""
        return read_text_inputs(args.texts, args.file)

    @abc.abstractmethod
    def predict_lines(self, model: "TFPreTrainedModel", preprocessor: Any, inputs: list[Any],
                      args: argparse.Namespace) -> list[str]:
        """The lines the predict command prints for the inputs."""

    def builds_architecture(self, architecture: str) -> bool:
        """Whether the task's Auto class builds a saved architecture name (e.g. BertForMaskedLM)."""
        from transformers.models.auto import modeling_tf_auto

        mapping = getattr(modeling_tf_auto, self.auto_model_class)._model_mapping
        names = [*mapping._model_mapping.values(),  # model type -> TF class name(s), nothing imported
                 *(model_class.__name__ for model_class in mapping._extra_content.values())]  # registered classes
        return any(f"TF{architecture}" in ((name,) if isinstance(name, str) else name) for name in names)


def read_text_inputs(texts: Sequence[str], path: str | None) -> list[str]:
    """The non-blank texts followed by the non-blank lines of the file at `path`."""
    inputs = [text for text in texts if text.strip()]
    if path:
        if not os.path.isfile(path):
            raise UserError(f"--file {path} does not exist; pass a text file with one input per line.")
        with open(path, encoding="utf-8") as file:
            inputs += [line.rstrip("\n") for line in file if line.strip()]
    if not inputs:
        raise UserError("no input text: pass texts as arguments or --file with one input per line.")
    return inputs


def text_pipeline(tag: str, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> Any:
    """transformers' TensorFlow `pipeline` for a pipeline tag."""
    from transformers import pipeline

    # dtype=None: the default "auto" makes pipeline() look up a torch dtype, which fails without PyTorch (4.57).
    return pipeline(tag, model=model, tokenizer=tokenizer, framework="tf", dtype=None)


def lower_is_better(result_key: str) -> bool:
    """Whether a smaller value of a result is better: losses, errors, perplexity."""
    return result_key.endswith(("loss", "error", "perplexity", "mse", "mae"))

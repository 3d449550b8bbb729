"""Sequence classification and regression over one text or a text pair (GLUE and your own files)."""
from __future__ import annotations

import abc
import argparse
from typing import TYPE_CHECKING, Any, Callable, Optional

import datasets
import numpy as np
import tensorflow as tf

from tf_finetune.core.errors import UserError
from tf_finetune.core.layout import CONFUSION_MATRIX_FILE
from tf_finetune.core.progress import PredictionProgress, with_progress
from tf_finetune.data.files import limit_samples
from tf_finetune.metrics import compute_metrics, load_metric
from tf_finetune.models.functions import logits_function
from tf_finetune.models.loading import max_model_length
from tf_finetune.tasks.base import RunContext, Task, TaskSplit

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig

LABEL = "label"


class SequenceClassificationTask(Task):
    """Raw splits hold the text column(s) and `label` (a ClassLabel, or float32 for regression)."""

    auto_model_class = "TFAutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    pipeline_tag = "text-classification"

    @abc.abstractmethod
    def text_columns(self, config: "TrainConfig", train: datasets.Dataset) -> list[str]:
        """The one or two columns holding the text."""

    @abc.abstractmethod
    def metrics(self, config: "TrainConfig", regression: bool) -> list[tuple[str, Optional[str], dict[str, Any]]]:
        """(metric name, config name, compute kwargs) for each evaluate metric the task reports."""

    def model_config_kwargs(self, raw_datasets: datasets.DatasetDict, config: "TrainConfig") -> dict[str, Any]:
        label = raw_datasets["train"].features[LABEL]
        if not isinstance(label, datasets.ClassLabel):
            return {"num_labels": 1, "problem_type": "regression"}
        return {"num_labels": label.num_classes, "id2label": dict(enumerate(label.names)),
                "label2id": {name: i for i, name in enumerate(label.names)},
                "problem_type": "single_label_classification"}

    def tokenize(self, raw_datasets: datasets.DatasetDict, tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> datasets.DatasetDict:
        columns = self.text_columns(config, raw_datasets["train"])

        def encode(batch: dict[str, list]) -> dict[str, list]:
            texts = [batch[column] for column in columns]
            return tokenizer(*texts, truncation=True, max_length=config.max_seq_length)

        splits = {}
        for split, examples in raw_datasets.items():
            examples = limit_samples(examples, config.max_samples(split))
            has_labels = LABEL in examples.column_names and split != "test"
            keep = [LABEL] if has_labels else []
            features = examples.map(encode, batched=True, load_from_cache_file=not config.overwrite_cache,
                                    remove_columns=[c for c in examples.column_names if c not in keep],
                                    num_proc=config.preprocessing_num_workers, desc=f"Tokenising {split}")
            splits[split] = TaskSplit(examples, features.rename_column(LABEL, "labels") if has_labels else features)
        return splits

    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=config.pad_to_multiple_of, return_tensors="np")

    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        regression = model_config.problem_type == "regression"
        sample = np.array([0.5, 1.0, 2.5], dtype=np.float32) if regression else np.array([0, 1, 1, 0])
        keys = ["eval_loss"]
        for name, config_name, kwargs in self.metrics(config, regression):
            scores = compute_metrics(load_metric(name, config_name), sample, sample, **kwargs)
            keys += [f"eval_{key}" for key in scores]
        return keys

    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig", context: RunContext) -> dict[str, float]:
        logits = model.predict(tf_dataset, verbose=0, callbacks=[PredictionProgress("Evaluating")]).logits
        return self._validation_results(model, logits, split, config)

    def final_evaluation(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                         config: "TrainConfig", context: RunContext) -> tuple[dict[str, float], dict[str, Any]]:
        """The results, and (classification, not regression) the confusion matrix of the same predictions."""
        logits = model.predict(tf_dataset, verbose=0, callbacks=[PredictionProgress("Evaluating")]).logits
        results = self._validation_results(model, logits, split, config)
        if model.config.problem_type == "regression":
            return results, {}
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        from sklearn.metrics import confusion_matrix  # here: scikit-learn takes a while to import

        matrix = confusion_matrix(np.asarray(split.features["labels"]), self._predictions(logits, model),
                                  labels=list(range(len(names))))
        return results, {CONFUSION_MATRIX_FILE: {"labels": names, "matrix": matrix.tolist()}}

    def _validation_results(self, model: "TFPreTrainedModel", logits: np.ndarray, split: TaskSplit,
                            config: "TrainConfig") -> dict[str, float]:
        """`eval_loss` and the task's metrics of the validation logits."""
        labels = np.asarray(split.features["labels"])
        loss = model.hf_compute_loss(tf.constant(labels), tf.constant(logits))
        results = {"eval_loss": float(np.mean(loss))}
        predictions = self._predictions(logits, model)
        return {**results, **self._scores(predictions, labels, config, model.config.problem_type == "regression")}

    def features_baseline_scorer(self, config: "TrainConfig", model_config: "PretrainedConfig"
                                 ) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
        if model_config.problem_type == "regression":
            raise UserError(f"--features_baseline fits a classifier, and {self.name} is regression here (float "
                            "labels); drop --features_baseline.")
        return lambda predictions, labels: self._scores(predictions, labels, config, regression=False)

    def _scores(self, predictions: np.ndarray, labels: np.ndarray, config: "TrainConfig",
                regression: bool) -> dict[str, float]:
        """The task's metrics (`eval_*` keys, no loss) of predictions (class indices or values) against labels."""
        results: dict[str, float] = {}
        for name, config_name, kwargs in self.metrics(config, regression):
            scores = compute_metrics(load_metric(name, config_name), predictions, labels, **kwargs)
            results.update({f"eval_{key}": value for key, value in scores.items()})
        return results

    def predict(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                config: "TrainConfig", context: RunContext) -> list[str]:
        logits = model.predict(tf_dataset, verbose=0, callbacks=[PredictionProgress("Predicting")]).logits
        predictions = self._predictions(logits, model)
        if model.config.problem_type == "regression":
            return [f"{value:.3f}" for value in predictions]
        return [model.config.id2label[int(index)] for index in predictions]

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", inputs: list[str],
                      args: argparse.Namespace) -> list[str]:
        """One line per text: label, score (the pipeline's: softmax probability, or the value for regression) and
        the text. Texts run in batches of --batch_size sorted by length, longest first."""
        logits = _logits_longest_first(model, tokenizer, inputs, args.batch_size)
        if model.config.problem_type == "regression":
            labels, scores = [model.config.id2label[0]] * len(inputs), logits[:, 0]
        else:
            labels = [model.config.id2label[int(index)] for index in np.argmax(logits, axis=-1)]
            scores = np.max(tf.nn.softmax(logits).numpy(), axis=-1)
        return [f"{label}\t{score:.4f}\t{text}" for label, score, text in zip(labels, scores, inputs)]

    @staticmethod
    def _predictions(logits: np.ndarray, model: "TFPreTrainedModel") -> np.ndarray:
        if model.config.problem_type == "regression":
            return logits[:, 0]
        return np.argmax(logits, axis=-1)


def _logits_longest_first(model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", texts: list[str],
                          batch_size: int) -> np.ndarray:
    """The model's logits for the texts (truncated to what the model takes), computed over batches of texts sorted
    by length, longest first, and returned in the texts' order."""
    limit = {"truncation": True, "max_length": max_model_length(model.config, tokenizer)}
    order = np.argsort([-len(ids) for ids in tokenizer(texts, **limit)["input_ids"]], kind="stable")
    step = logits_function(model)
    logits = np.empty((len(texts), model.config.num_labels), np.float32)
    for start in with_progress(range(0, len(texts), batch_size), "Predicting"):
        rows = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, return_tensors="np", **limit)
        logits[rows] = step(dict(batch))
    return logits


def encode_labels(raw_datasets: datasets.DatasetDict, names: Optional[list[str]] = None) -> datasets.DatasetDict:
    """Cast every labelled split's `label` to one ClassLabel.

    Without `names`, the names are the training labels, sorted (string labels, or integer ones such as 1-5 stars);
    with `names`, integer labels are indices into them. A validation label unseen in training is an error; a test
    split whose labels are unknown (GLUE's -1) loses its label column.
    """
    integer_indices = names is not None
    for split, dataset in raw_datasets.items():
        if split != "test" and LABEL in dataset.column_names and None in dataset.unique(LABEL):
            raise UserError(f"{split} data has examples without a label; fill in or remove them.")
    if names is None:
        names = [str(value) for value in sorted(set(raw_datasets["train"][LABEL]))]
    class_label = datasets.ClassLabel(names=names)
    encoded = {}
    for split, dataset in raw_datasets.items():
        if LABEL not in dataset.column_names or isinstance(dataset.features[LABEL], datasets.ClassLabel):
            encoded[split] = dataset
            continue
        as_index = integer_indices and dataset.features[LABEL].dtype.startswith("int")
        values = set(dataset.unique(LABEL)) if as_index else {str(v) for v in dataset.unique(LABEL)}
        unseen = sorted(map(str, values - (set(range(len(names))) if as_index else set(names))))
        if unseen and split == "test":
            encoded[split] = dataset.remove_columns(LABEL)
        elif unseen:
            raise UserError(f"{split} data has label(s) {', '.join(unseen[:5])} that the training data does not "
                            f"have (training labels: {', '.join(names[:20])}); fix the labels or the split.")
        elif as_index:
            encoded[split] = dataset.cast_column(LABEL, class_label)
        else:
            strings = datasets.Features({**dataset.features, LABEL: datasets.Value("string")})
            as_strings = dataset.map(lambda batch: {LABEL: [str(v) for v in batch[LABEL]]}, batched=True,
                                     features=strings, desc=f"Reading {split} labels")
            encoded[split] = as_strings.cast_column(LABEL, class_label)
    return datasets.DatasetDict(encoded)

"""What every task provides: how to read, tokenise, collate, model, score and predict one kind of problem."""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig


class Task(abc.ABC):
    """A registered task. The trainer only talks to tasks through these methods; it never checks task names."""

    name: str
    auto_model_class: str  # a transformers TFAutoModelFor... class name
    pipeline_tag: str  # the Hub's task id for model cards, e.g. "text-classification"
    description: str = ""

    @abc.abstractmethod
    def load_raw_datasets(self, config: "TrainConfig") -> "DatasetDict":
        """Raw splits named train / validation / test (those that exist), before tokenisation."""

    def model_config_kwargs(self, raw_datasets: "DatasetDict", config: "TrainConfig") -> dict[str, Any]:
        """Model config fields the task fixes (num_labels, id2label, problem_type, ...)."""
        return {}

    @abc.abstractmethod
    def tokenize(self, raw_datasets: "DatasetDict", tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> "DatasetDict":
        """Model-ready splits (input_ids, attention_mask, labels, ...), through cached `datasets.map`."""

    @abc.abstractmethod
    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        """Collates examples into a NumPy batch for `prepare_tf_dataset`."""

    @abc.abstractmethod
    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        """The `eval_*` key that picks the best epoch, and whether greater is better."""

    @abc.abstractmethod
    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        """The keys `evaluate` returns, known before training (loading the metrics, so a bad one fails early)."""

    @abc.abstractmethod
    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, dataset: "Dataset",
                 config: "TrainConfig") -> dict[str, float]:
        """Validation results with `eval_` keys (eval_loss and the task's metrics)."""

    def predict(self, model: "TFPreTrainedModel", tf_dataset: Any, dataset: "Dataset",
                config: "TrainConfig") -> list[str]:
        """One prediction string per test example, for predict_results_<task>.txt."""
        raise NotImplementedError(f"task {self.name} does not write test predictions")


def lower_is_better(result_key: str) -> bool:
    """Whether a smaller value of a result is better: losses, errors, perplexity."""
    return result_key.endswith(("loss", "error", "perplexity", "mse", "mae"))

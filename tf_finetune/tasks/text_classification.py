"""Classification or regression of your own labelled files (CSV, TSV, JSON Lines, Parquet) or a Hub dataset."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import datasets

from tf_finetune.core.errors import UserError
from tf_finetune.data.files import load_data_file, load_hub_dataset, require_columns
from tf_finetune.tasks.base import lower_is_better
from tf_finetune.tasks.classification import LABEL, SequenceClassificationTask, encode_labels

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from tf_finetune.config import TrainConfig

_DEFAULT_TEXT_COLUMNS = (["sentence1", "sentence2"], ["text"], ["sentence"])


class TextClassificationTask(SequenceClassificationTask):
    """String or integer labels become classes (names kept in the model config); float labels mean regression."""

    name = "text-classification"
    description = "classification or regression of your own texts or text pairs (--text_column, --label_column)"
    data_formats = "--train_file/--validation_file/--test_file: .csv, .tsv, .json(l), .parquet; or --dataset_name"
    reported_metrics = "eval_accuracy, eval_f1 (macro); regression: eval_pearsonr, eval_spearmanr; or --metric"

    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        if config.dataset_name:
            raw = load_hub_dataset(config.dataset_name, config.dataset_config_name)
        else:
            files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
            if not files["train"] and config.do_train:
                raise UserError("text-classification needs --train_file (or --dataset_name).")
            if not files["validation"] and config.do_eval:
                raise UserError("text-classification needs --validation_file to evaluate; pass one or --do_eval "
                                "false.")
            raw = datasets.DatasetDict({split: load_data_file(path, split) for split, path in files.items() if path})
        if "train" not in raw:
            raise UserError("the dataset has no train split; text-classification needs labelled training data.")
        columns = self.text_columns(config, raw["train"])
        for split, dataset in raw.items():
            require_columns(dataset, columns, split, "--text_column")
            if split != "test":
                require_columns(dataset, [config.label_column], split, "--label_column")
        raw = datasets.DatasetDict({split: self._select(d, columns, config.label_column) for split, d in raw.items()})
        for split, dataset in raw.items():
            if split != "test":
                _check_label_values(dataset, split)
        if raw["train"].features[LABEL].dtype in ("float32", "float64"):
            return datasets.DatasetDict({split: d.cast_column(LABEL, datasets.Value("float32"))
                                         if LABEL in d.column_names else d for split, d in raw.items()})
        return encode_labels(raw)

    def text_columns(self, config: "TrainConfig", train: datasets.Dataset) -> list[str]:
        if config.text_column:
            return list(config.text_column)
        for candidate in _DEFAULT_TEXT_COLUMNS:
            if all(column in train.column_names for column in candidate):
                return candidate
        raise UserError(f"cannot tell which column holds the text (columns: {', '.join(train.column_names)}); "
                        "set --text_column.")

    def metrics(self, config: "TrainConfig", regression: bool) -> list[tuple[str, Optional[str], dict[str, Any]]]:
        if config.metric:
            return [(config.metric, None, {})]
        if regression:
            return [("pearsonr", None, {}), ("spearmanr", None, {})]
        return [("accuracy", None, {}), ("f1", None, {"average": "macro"})]

    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        if config.metric:  # the metric's first result, e.g. eval_matthews_correlation
            first = self.result_keys(config, model_config)[1]
            return first, not lower_is_better(first)
        return ("eval_pearsonr", True) if model_config.problem_type == "regression" else ("eval_accuracy", True)

    @staticmethod
    def _select(dataset: datasets.Dataset, columns: list[str], label_column: str) -> datasets.Dataset:
        if label_column in dataset.column_names and label_column != LABEL:
            dataset = dataset.remove_columns([c for c in (LABEL,) if c in dataset.column_names and c not in columns])
            dataset = dataset.rename_column(label_column, LABEL)
        keep = [*columns, LABEL]
        return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def _check_label_values(dataset: datasets.Dataset, split: str) -> None:
    """Raise a UserError naming the first row whose label is blank, NaN or infinite (a blank cell would otherwise
    turn a column of numbers into text classes, and a NaN would train regression to NaN)."""
    for row, value in enumerate(dataset[LABEL], start=1):
        text = str(value).strip().lower() if value is not None else ""
        if text in ("", "nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
            shown = "blank" if not text else text
            raise UserError(f"{split} data: the label is {shown} in row {row} (counting data rows from 1); fill in a "
                            "value or remove the row.")


TASKS = (TextClassificationTask(),)

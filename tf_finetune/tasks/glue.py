"""The ten GLUE tasks, from the Hub (nyu-mll/glue) or from the original GLUE distribution layout (--data_dir)."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import datasets

from tf_finetune.core.errors import UserError
from tf_finetune.data.files import load_hub_dataset, load_split
from tf_finetune.tasks.classification import LABEL, SequenceClassificationTask, encode_labels

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from tf_finetune.config import TrainConfig


@dataclass(frozen=True)
class GlueSpec:
    """Where one GLUE task's files are and what their columns mean."""

    hub_config: str
    directory: str
    text_columns: tuple[str, ...]
    label_names: Optional[tuple[str, ...]]  # None: regression
    renames: dict[str, str] = field(default_factory=dict)  # distribution column -> nyu-mll/glue column
    validation: tuple[str, str] = ("dev.tsv", "validation")  # (local file, Hub split)
    test: tuple[str, str] = ("test.tsv", "test")
    headerless_columns: Optional[tuple[str, ...]] = None  # train/dev files without a header row
    # What the glue metric reports for the task; the first is the main one.
    metric_names: tuple[str, ...] = ("accuracy",)


_PAIR = ("sentence1", "sentence2")
_NLI = ("entailment", "not_entailment")
_MNLI = dict(hub_config="mnli", directory="MNLI", text_columns=("premise", "hypothesis"),
             label_names=("entailment", "neutral", "contradiction"),
             renames={"sentence1": "premise", "sentence2": "hypothesis", "gold_label": LABEL})

GLUE_TASKS: dict[str, GlueSpec] = {
    "cola": GlueSpec("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"),
                     headerless_columns=("source", LABEL, "original_mark", "sentence"),
                     metric_names=("matthews_correlation",)),
    "sst2": GlueSpec("sst2", "SST-2", ("sentence",), ("negative", "positive")),
    "mrpc": GlueSpec("mrpc", "MRPC", _PAIR, ("not_equivalent", "equivalent"),
                     renames={"Quality": LABEL, "#1 String": "sentence1", "#2 String": "sentence2"},
                     metric_names=("accuracy", "f1")),
    "qqp": GlueSpec("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
                    renames={"is_duplicate": LABEL}, metric_names=("accuracy", "f1")),
    "stsb": GlueSpec("stsb", "STS-B", _PAIR, None, renames={"score": LABEL},
                     metric_names=("pearson", "spearmanr")),
    "mnli": GlueSpec(**_MNLI, validation=("dev_matched.tsv", "validation_matched"),
                     test=("test_matched.tsv", "test_matched")),
    "mnli-mm": GlueSpec(**_MNLI, validation=("dev_mismatched.tsv", "validation_mismatched"),
                        test=("test_mismatched.tsv", "test_mismatched")),
    "qnli": GlueSpec("qnli", "QNLI", ("question", "sentence"), _NLI),
    "rte": GlueSpec("rte", "RTE", _PAIR, _NLI),
    "wnli": GlueSpec("wnli", "WNLI", _PAIR, ("not_entailment", "entailment")),
}


class GlueTask(SequenceClassificationTask):
    """One GLUE task with its official metric."""

    def __init__(self, name: str, spec: GlueSpec):
        self.name = name
        self.spec = spec
        kind = "regression" if spec.label_names is None else f"{len(spec.label_names)}-class classification"
        self.description = f"GLUE {spec.directory}: {kind} of {' / '.join(spec.text_columns)}"
        self.data_formats = (f"--data_dir with {spec.directory}/train.tsv, {spec.directory}/{spec.validation[0]} "
                             f"(original GLUE layout), or nyu-mll/glue from the Hub")
        self.reported_metrics = ", ".join(f"eval_{metric}" for metric in ("loss", *spec.metric_names))

    def text_columns(self, config: "TrainConfig", train: datasets.Dataset) -> list[str]:
        return list(self.spec.text_columns)

    def metrics(self, config: "TrainConfig", regression: bool) -> list[tuple[str, Optional[str], dict[str, Any]]]:
        return [("glue", self.spec.hub_config, {})]

    def hub_dataset(self, run_config: dict[str, Any]) -> tuple[Optional[str], Optional[str]]:
        """nyu-mll/glue and the task's configuration, also when the run read a local copy (--data_dir)."""
        return "nyu-mll/glue", self.spec.hub_config

    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        return f"eval_{self.spec.metric_names[0]}", True

    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        if config.data_dir or config.train_file:
            raw = self._load_local(config)
        else:
            hub = load_hub_dataset("nyu-mll/glue", self.spec.hub_config)
            raw = datasets.DatasetDict({"train": hub["train"], "validation": hub[self.spec.validation[1]],
                                        "test": hub[self.spec.test[1]]})
        if self.spec.label_names is None:
            return datasets.DatasetDict({split: d.cast_column(LABEL, datasets.Value("float32"))
                                         if LABEL in d.column_names else d for split, d in raw.items()})
        return encode_labels(raw, list(self.spec.label_names))

    def _load_local(self, config: "TrainConfig") -> datasets.DatasetDict:
        """The task's TSV files from --data_dir; --train_file/--validation_file/--test_file override single files."""
        directory = os.path.join(config.data_dir, self.spec.directory) if config.data_dir else None
        if directory and not os.path.isdir(directory):
            raise UserError(f"--data_dir {config.data_dir} has no {self.spec.directory}/ folder; point it at the "
                            "GLUE data in its original layout (e.g. SST-2/train.tsv).")
        files = {"train": (config.train_file, "train.tsv"),
                 "validation": (config.validation_file, self.spec.validation[0])}
        if config.do_predict:
            files["test"] = (config.test_file, self.spec.test[0])
        paths = {split: given or (os.path.join(directory, name) if directory else None)
                 for split, (given, name) in files.items()}
        missing = [split for split, path in paths.items() if path is None]
        if missing:
            raise UserError(f"no {missing[0]} data for {self.name}: pass --data_dir or --{missing[0]}_file.")
        return datasets.DatasetDict({split: self._read_tsv(path, split) for split, path in paths.items()})

    def _read_tsv(self, path: str, split: str) -> datasets.Dataset:
        if not os.path.isfile(path):
            raise UserError(f"GLUE file {path} is missing; the {self.name} task needs it in --data_dir.")
        options: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "encoding": "utf-8-sig",
                                   "keep_default_na": False, "na_filter": False}
        if self.spec.headerless_columns and split != "test":
            options.update(header=None, column_names=list(self.spec.headerless_columns))
        dataset = load_split("csv", split, path, **options)
        renames = {old: new for old, new in self.spec.renames.items() if old in dataset.column_names}
        dataset = dataset.rename_columns(renames)
        keep = [*self.spec.text_columns, LABEL]
        return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


TASKS = tuple(GlueTask(name, spec) for name, spec in GLUE_TASKS.items())

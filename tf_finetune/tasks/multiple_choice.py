"""Multiple choice: pick the right ending (or answer) of a context among a fixed number of candidates.

Reads SWAG-style rows (`sent1`, `sent2`, `ending0..N`, `label`: choice i is sent2 + " " + ending_i, as run_swag.py
builds it), question rows (`question`, a `choices` list, `label` or `answer`), or any columns named with
--context_column / --choice_columns / --label_column (and --column_names for a CSV/TSV without a header row, such as
CODAH's). Every split is read into examples of `context`, `choices` (a list) and `label` (an index); each (context,
choice) pair is tokenised and the model scores every choice, the softmax over the choices picking one.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import datasets
import numpy as np
from transformers import DataCollatorForMultipleChoice

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import write_text
from tf_finetune.core.layout import predictions_file
from tf_finetune.core.progress import PredictionProgress
from tf_finetune.data.files import limit_samples, load_data_file, load_hub_dataset, load_split, require_columns
from tf_finetune.metrics import compute_metrics, load_metric
from tf_finetune.tasks.base import RunContext, Task, TaskSplit

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig

CONTEXT, CHOICES, LABEL = "context", "choices", "label"
_FILE_TYPES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
_EXAMPLE_FEATURES = {CONTEXT: datasets.Value("string"), CHOICES: datasets.List(datasets.Value("string"))}


@dataclass(frozen=True)
class Origin:
    """Where a split's rows come from, to name a bad row: a file (and the line of its first row) or a Hub split."""

    split: str
    path: Optional[str] = None
    first_line: Optional[int] = None  # the file line of row 0 (CSV/TSV/JSON Lines); None: rows are not lines

    def row(self, index: int) -> str:
        """'train file a.csv line 5' or 'validation example 4' for row `index` (0-based)."""
        if self.path and self.first_line is not None:
            return f"{self.split} file {self.path} line {index + self.first_line}"
        return f"{self.split} {'file ' + self.path + ' ' if self.path else ''}example {index}"


@dataclass(frozen=True)
class Layout:
    """Which columns hold the context, the choices (several columns, or one column of lists) and the label."""

    context: str
    choices: tuple[str, ...]
    choice_list: bool  # True: choices[0] is one column holding a list of choices per row
    label: str
    prefix: Optional[str] = None  # SWAG's sent2: the start every choice continues


class MultipleChoiceCollator(DataCollatorForMultipleChoice):
    """transformers' multiple-choice collator with the NumPy path `prepare_tf_dataset` needs (4.57 has torch and
    tf only): every choice of every example padded to one length, shaped (batch, num_choices, length)."""

    def numpy_call(self, features: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        num_choices = len(features[0]["input_ids"])
        labels = [feature["labels"] for feature in features if "labels" in feature]
        flat = [{key: values[i] for key, values in feature.items() if key != "labels"}
                for feature in features for i in range(num_choices)]
        batch = self.tokenizer.pad(flat, padding=self.padding, max_length=self.max_length,
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="np")
        batch = {key: values.reshape(len(features), num_choices, -1) for key, values in batch.items()}
        if labels:
            batch["labels"] = np.asarray(labels, dtype=np.int64)
        return batch


class MultipleChoiceTask(Task):
    """SWAG, CODAH, question + choices files: one score per choice, cross-entropy over the choices."""

    name = "multiple-choice"
    auto_model_class = "TFAutoModelForMultipleChoice"
    pipeline_tag = "multiple-choice"
    description = ("pick the right ending or answer among N choices (SWAG-style sent1/sent2/ending0..N, or question "
                   "+ choices; --context_column, --choice_columns, --label_column)")
    data_formats = (".csv, .tsv, .json(l), .parquet (--column_names for CSV/TSV without a header row), or "
                    "--dataset_name")
    reported_metrics = "eval_loss, eval_accuracy"

    # Reading
    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        """Splits of `context`, `choices` and (train and validation) `label`, every row checked."""
        if config.dataset_name:
            hub = load_hub_dataset(config.dataset_name, config.dataset_config_name)
            raw = {split: (hub[split], Origin(split)) for split in ("train", "validation", "test") if split in hub}
        else:
            files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
            if config.do_train and not files["train"]:
                raise UserError("multiple-choice needs --train_file (or --dataset_name).")
            if config.do_eval and not files["validation"]:
                raise UserError("multiple-choice needs --validation_file to evaluate; pass one or --do_eval false.")
            raw = {split: read_file(path, split, config.column_names) for split, path in files.items() if path}
        return datasets.DatasetDict({split: to_examples(dataset, origin, config)
                                     for split, (dataset, origin) in raw.items()})

    def tokenize(self, raw_datasets: datasets.DatasetDict, tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> dict[str, TaskSplit]:
        """Each (context, choice) pair tokenised (truncated to --max_seq_length); features hold num_choices
        sequences per example and `labels`."""
        max_length = config.max_seq_length

        def encode(batch: dict[str, list]) -> dict[str, list]:
            contexts = [context for context, choices in zip(batch[CONTEXT], batch[CHOICES]) for _ in choices]
            endings = [choice for choices in batch[CHOICES] for choice in choices]
            # truncation=True (longest first), as run_swag: "only_first" fails when a choice alone is too long.
            encoded = tokenizer(contexts, endings, truncation=True, max_length=max_length)
            starts = np.cumsum([0, *(len(choices) for choices in batch[CHOICES])])
            return {key: [values[start:end] for start, end in zip(starts[:-1], starts[1:])]
                    for key, values in encoded.items()}

        splits = {}
        for split, examples in raw_datasets.items():
            examples = limit_samples(examples, config.max_samples(split))
            features = examples.map(encode, batched=True, load_from_cache_file=not config.overwrite_cache,
                                    remove_columns=[c for c in examples.column_names if c != LABEL],
                                    num_proc=config.preprocessing_num_workers, desc=f"Tokenising {split}")
            splits[split] = TaskSplit(examples, features.rename_column(LABEL, "labels")
                                      if LABEL in features.column_names else features)
        return splits

    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        return MultipleChoiceCollator(tokenizer, pad_to_multiple_of=config.pad_to_multiple_of, return_tensors="np")

    # Scoring
    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        return "eval_accuracy", True

    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        sample = np.array([0, 1, 1, 0])
        return ["eval_loss", *(f"eval_{key}" for key in compute_metrics(load_metric("accuracy"), sample, sample))]

    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig", context: RunContext) -> dict[str, float]:
        """The model's own cross-entropy over the choices (mean over examples) and the accuracy."""
        import tensorflow as tf

        logits = model.predict(tf_dataset, verbose=0, callbacks=[PredictionProgress("Evaluating")]).logits
        labels = np.asarray(split.features["labels"])
        results = {"eval_loss": float(np.mean(model.hf_compute_loss(tf.constant(labels), tf.constant(logits))))}
        scores = compute_metrics(load_metric("accuracy"), np.argmax(logits, axis=-1), labels)
        results.update({f"eval_{key}": value for key, value in scores.items()})
        return results

    # Predictions of --do_predict
    def predict(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                config: "TrainConfig", context: RunContext) -> list[int]:
        """The index of the chosen choice of every test example."""
        logits = model.predict(tf_dataset, verbose=0, callbacks=[PredictionProgress("Predicting")]).logits
        return [int(index) for index in np.argmax(logits, axis=-1)]

    def write_predictions(self, predictions: Sequence[int], split: TaskSplit, output_dir: str,
                          config: "TrainConfig") -> str:
        """`predict_results_multiple-choice.txt`: index, chosen choice index and its text per example."""
        path = os.path.join(output_dir, predictions_file(self.name, "txt"))
        chosen = (" ".join(choices[index].split()) for choices, index in zip(split.examples[CHOICES], predictions))
        lines = ["index\tprediction\tchoice", *(f"{i}\t{p}\t{text}" for i, (p, text)
                                                 in enumerate(zip(predictions, chosen)))]
        write_text(path, "\n".join(lines) + "\n")
        return path

    # The predict command
    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--choices", nargs="+", help="multiple-choice: the candidate endings or answers of every "
                            "TEXT (the context); --file lines are JSON {\"context\": ..., \"choices\": [...]}.")

    def predict_inputs(self, args: argparse.Namespace, tokenizer: "PreTrainedTokenizerBase") -> list[Any]:
        """(context, choices) pairs: each TEXT with --choices, then each line of the JSON Lines --file."""
        items = [(text, list(args.choices or [])) for text in args.texts if text.strip()]
        if args.file:
            items += read_predict_file(args.file, args.choices)
        if not items:
            raise UserError("no input: pass a context as TEXT with --choices, or --file with JSON lines "
                            "{\"context\": ..., \"choices\": [...]}.")
        for number, (context, choices) in enumerate(items, start=1):
            if len(choices) < 2 or not all(str(choice).strip() for choice in choices):
                raise UserError(f"input {number} ({context[:60]!r}) has {len(choices)} choice(s) or an empty one; "
                                "pass at least two non-empty choices with --choices (or in its --file line).")
        return items

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", inputs: list[Any],
                      args: argparse.Namespace) -> list[str]:
        """Each context, the chosen choice, then every choice with its probability."""
        lines = []
        for context, choices in inputs:
            probabilities = choice_probabilities(model, tokenizer, context, choices)
            best = int(np.argmax(probabilities))
            lines += [context, f"  answer: {choices[best]}"]
            lines += [f"  {'*' if i == best else ' '} {p:.4f}  {choice}"
                      for i, (p, choice) in enumerate(zip(probabilities, choices))]
        return lines


def read_file(path: str, split: str, column_names: Optional[list[str]]) -> tuple[datasets.Dataset, Origin]:
    """One split's file; a CSV/TSV without a header row is read with --column_names (checked against every row)."""
    extension = os.path.splitext(path)[1].lower()
    if not column_names:
        header = 1 if extension in (".csv", ".tsv") else 0
        first_line = 1 + header if extension in (".csv", ".tsv", ".jsonl") else None
        return load_data_file(path, split, allowed=_FILE_TYPES), Origin(split, path, first_line)
    if extension not in (".csv", ".tsv"):
        raise UserError(f"--column_names names the columns of a CSV/TSV file without a header row, but {split} file "
                        f"{path} is {extension or 'without extension'}; drop --column_names.")
    if not os.path.isfile(path):
        raise UserError(f"{split} file {path} does not exist; check the path.")
    options: dict[str, Any] = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if extension == ".tsv"
                               else {"delimiter": ","})
    check_column_count(path, split, column_names, options)
    dataset = load_split("csv", split, path, header=None, column_names=list(column_names), keep_default_na=False,
                         na_filter=False, **options)
    return dataset, Origin(split, path, 1)


def check_column_count(path: str, split: str, column_names: list[str], options: dict[str, Any]) -> None:
    """Every row of a headerless file has as many columns as --column_names names (pandas would silently turn extra
    columns into an index, or fill missing ones)."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = csv.reader(file, **options)
        for row in rows:
            if row and len(row) != len(column_names):
                raise UserError(f"{split} file {path} line {rows.line_num} has {len(row)} columns but --column_names "
                                f"names {len(column_names)} ({' '.join(column_names)}); give one name per column.")


def find_layout(dataset: datasets.Dataset, split: str, config: "TrainConfig") -> Layout:
    """The columns of a split: the flags, else sent1 (+ sent2) / question and ending0..N / a `choices` list."""
    columns = dataset.column_names
    context = config.context_column or next((c for c in ("sent1", "question") if c in columns), None)
    if context is None:
        raise UserError(f"cannot tell which {split} column holds the context (columns: {', '.join(columns)}); set "
                        "--context_column (and --column_names for a CSV/TSV without a header row).")
    require_columns(dataset, [context], split, "--context_column")
    if config.choice_columns:
        choices = tuple(config.choice_columns)
        require_columns(dataset, list(choices), split, "--choice_columns")
    else:
        endings = tuple(itertools.takewhile(columns.__contains__, (f"ending{i}" for i in itertools.count())))
        choices = endings or ((CHOICES,) if CHOICES in columns else ())
        if not choices:
            raise UserError(f"cannot tell which {split} columns hold the choices (columns: {', '.join(columns)}); "
                            "set --choice_columns (the ending columns in order, or one column of lists).")
    choice_list = len(choices) == 1 and isinstance(dataset.features[choices[0]],
                                                            (datasets.List, datasets.LargeList))
    if len(choices) == 1 and not choice_list:
        raise UserError(f"{split} column {choices[0]!r} holds {dataset.features[choices[0]]}, not a list of choices; "
                        "name two or more ending columns with --choice_columns, or one column of lists.")
    label = config.label_column
    if label == LABEL and LABEL not in columns and "answer" in columns:
        label = "answer"
    if split != "test":
        require_columns(dataset, [label], split, "--label_column")
    prefix = "sent2" if context == "sent1" and "sent2" in columns else None
    return Layout(context, choices, choice_list, label, prefix)


def to_examples(dataset: datasets.Dataset, origin: Origin, config: "TrainConfig") -> datasets.Dataset:
    """A split as `context`, `choices` and (except test) `label` rows; a bad row raises a UserError naming it."""
    layout = find_layout(dataset, origin.split, config)
    labelled = origin.split != "test"
    features = datasets.Features({**_EXAMPLE_FEATURES, **({LABEL: datasets.Value("int64")} if labelled else {})})

    def read(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows: dict[str, list] = {name: [] for name in features}
        for row, index in enumerate(indices):
            endings = (list(batch[layout.choices[0]][row] or []) if layout.choice_list
                       else [batch[column][row] for column in layout.choices])
            endings = check_endings(endings, layout, origin.row(index))
            prefix = str(batch[layout.prefix][row] or "").strip() if layout.prefix else ""
            rows[CONTEXT].append(str(batch[layout.context][row] or ""))
            rows[CHOICES].append([f"{prefix} {ending}" if prefix else ending for ending in endings])
            if labelled:
                rows[LABEL].append(label_index(batch[layout.label][row], endings, layout.label, origin.row(index)))
        return rows

    examples = dataset.map(read, batched=True, with_indices=True, features=features,
                           remove_columns=dataset.column_names, load_from_cache_file=not config.overwrite_cache,
                           desc=f"Reading {origin.split} examples")
    check_same_number_of_choices(examples, origin)
    return examples


def check_endings(endings: list[Any], layout: Layout, where: str) -> list[str]:
    """The endings of one row as texts; fewer than two, or an empty one, is an error."""
    if len(endings) < 2:
        raise UserError(f"{where} has {len(endings)} choice(s); every example needs at least two (fix the row, or "
                        "name the ending columns with --choice_columns).")
    texts = ["" if ending is None else str(ending).strip() for ending in endings]
    for i, text in enumerate(texts):
        if not text:
            column = f"column {layout.choices[i]!r}" if not layout.choice_list else f"in {layout.choices[0]!r}"
            raise UserError(f"{where} has an empty choice {i} ({column}); fill it in or remove the row.")
    return texts


def label_index(value: Any, endings: list[str], column: str, where: str) -> int:
    """A row's label as a 0-based choice index: an integer, the exact text of a choice, or a number as text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UserError(f"{where} has no label; fill in column {column!r} or remove the row.")
    if isinstance(value, str):
        text = value.strip()
        if text in endings:
            return endings.index(text)
        if not text.lstrip("-").isdigit():
            raise UserError(f"{where} has {column} {value!r}, which is none of its choices ({' | '.join(endings)}); "
                            "give the right choice's index (0-based) or its exact text.")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{where} has {column} {value!r}; give the right choice's index (0-based) or its text.")
    if not 0 <= value < len(endings):
        raise UserError(f"{where} has {column} {value}, out of range for its {len(endings)} choices (0 to "
                        f"{len(endings) - 1}); labels are 0-based choice indices.")
    return int(value)


def check_same_number_of_choices(examples: datasets.Dataset, origin: Origin) -> None:
    """Every example of a split has as many choices as the first (a batch holds one number of choices)."""
    import pyarrow.compute as pc

    counts = pc.list_value_length(examples.data.column(CHOICES)).to_numpy()
    differs = np.flatnonzero(counts != counts[0])
    if differs.size:
        index = int(differs[0])
        raise UserError(f"{origin.row(index)} has {counts[index]} choices but {origin.row(0)} has {counts[0]}; every "
                        f"example of the {origin.split} split needs the same number of choices.")


def read_predict_file(path: str, default_choices: Optional[list[str]]) -> list[tuple[str, list[str]]]:
    """(context, choices) of each line of a JSON Lines file; a line without choices takes --choices."""
    if not os.path.isfile(path):
        raise UserError(f"--file {path} does not exist; pass a JSON Lines file of {{\"context\": ..., "
                        "\"choices\": [...]} objects.")
    items = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                item = None
            if not isinstance(item, dict) or not isinstance(item.get("context"), str):
                raise UserError(f"--file {path} line {number} is not a JSON object with a \"context\" text; give one "
                                "{\"context\": ..., \"choices\": [...]} object per line.")
            choices = item.get("choices", default_choices) or []
            if not isinstance(choices, list):
                raise UserError(f"--file {path} line {number}: \"choices\" must be a list of texts.")
            items.append((item["context"], [str(choice) for choice in choices]))
    return items


def choice_probabilities(model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", context: str,
                         choices: list[str]) -> np.ndarray:
    """The softmax over the model's scores of each (context, choice) pair."""
    from tf_finetune.models.loading import max_model_length

    encoded = tokenizer([context] * len(choices), choices, truncation=True, padding=True, return_tensors="np",
                        max_length=max_model_length(model.config, tokenizer))
    logits = np.asarray(model({key: values[None] for key, values in encoded.items()}, training=False).logits[0],
                        dtype=np.float64)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


TASKS = (MultipleChoiceTask(),)

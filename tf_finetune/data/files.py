"""Reading data files and Hub datasets into `datasets.DatasetDict`s, with clear errors for bad input."""
from __future__ import annotations

import csv
import json
import os
import re
from typing import Any, Callable, Iterator, Optional

import datasets

from tf_finetune.core.errors import UserError
from tf_finetune.hub.client import hub_reachable

_BUILDERS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
             ".json": ("json", {}), ".jsonl": ("json", {}), ".parquet": ("parquet", {}), ".txt": ("text", {})}

datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a file it cannot read is reported as one UserError


def load_data_file(path: str, split: str, allowed: tuple[str, ...] = (".csv", ".tsv", ".json", ".jsonl",
                                                                      ".parquet")) -> datasets.Dataset:
    """One split from a local file, through the `datasets` builders (so the result is cached on disk)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in allowed:
        raise UserError(f"{split} file {path} has an unsupported extension; use one of {', '.join(allowed)}.")
    if not os.path.isfile(path):
        raise UserError(f"{split} file {path} does not exist; check the path.")
    if not os.access(path, os.R_OK):
        raise UserError(f"{split} file {path} is not readable; check its permissions.")
    builder, options = _BUILDERS[extension]
    if builder == "csv":
        options = {**options, "keep_default_na": False, "na_filter": False}
    return load_split(builder, split, path, **options)


def load_split(builder: str, split: str, path: str, **options: Any) -> datasets.Dataset:
    """Load one file with a `datasets` builder; parse failures become a UserError naming the file."""
    if _blank(path):  # builders fail on these in their own ways (the json builder with a bare StopIteration)
        raise _no_examples(split, path)
    try:
        dataset = datasets.load_dataset(builder, data_files={split: path}, split=split, **options)
    except Exception as error:  # noqa: BLE001 - any parse failure is a problem with the user's file
        if "corresponds to no data" in str(error):  # datasets' words for a file with a header and no rows
            raise _no_examples(split, path) from error
        raise _unreadable(split, path, builder, error) from error
    if len(dataset) == 0:
        raise _no_examples(split, path)
    return dataset


def load_generated(generator: Callable[..., Iterator[dict[str, Any]]], path: str, split: str,
                   features: datasets.Features, **kwargs: Any) -> datasets.Dataset:
    """The rows `generator(path=..., **kwargs)` reads from a file of a format no `datasets` builder knows, through
    `Dataset.from_generator`: cached on disk like the builders' output (the file's size and modification time are part
    of the cache key). A UserError the generator raises (naming a bad line) reaches the caller as it is."""
    if _blank(path):
        raise _no_examples(split, path)
    stat = os.stat(path)
    try:
        return datasets.Dataset.from_generator(generator, features=features, gen_kwargs={
            "path": os.path.abspath(path), **kwargs, "version": (stat.st_size, stat.st_mtime_ns)})
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise
    except ValueError as error:  # datasets' words for a generator that yields nothing
        if "corresponds to no data" not in str(error):
            raise
        raise _no_examples(split, path) from None


def _unreadable(split: str, path: str, builder: str, error: Exception) -> UserError:
    """The error for a file a builder cannot parse, naming the line at fault where it can be found."""
    if builder not in ("csv", "json", "text"):  # binary formats: the builder's own words
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        return UserError(f"could not read {split} file {path}: {detail}")
    not_utf8 = _first_non_utf8(path)
    if not_utf8 is not None:
        return UserError(f"{split} file {path} is not UTF-8 text (byte {not_utf8[1]:#04x} on line {not_utf8[0]}); "
                         "re-save it as UTF-8.")
    causes, cause = [], error
    while cause is not None:  # datasets wraps the parser's error
        causes.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", " ".join(causes))
    if fields:
        expected, line, seen = fields.groups()
        return UserError(f"{split} file {path}: line {line} has {seen} fields where the header has {expected}; "
                         "fix that row (quote texts that hold the separator).")
    if path.lower().endswith(".jsonl"):
        for number, line in enumerate(_lines(path), start=1):
            try:
                json.loads(line) if line.strip() else None
            except ValueError:
                return UserError(f"{split} file {path} line {number} is not valid JSON; fix or remove it.")
    detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return UserError(f"could not read {split} file {path}: {detail}")


def _first_non_utf8(path: str) -> Optional[tuple[int, int]]:
    """(line, byte) of the first byte sequence that is not UTF-8, or None."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return number, line[error.start]
    return None


def _lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as file:
        yield from file


def _no_examples(split: str, path: str) -> UserError:
    """The error for a data file without examples (blank, a header only, or nothing a reader keeps)."""
    return UserError(f"{split} file {path} holds no examples; give a file with data.")


def _blank(path: str) -> bool:
    """Whether a file holds nothing but whitespace (read up to its first non-blank line)."""
    with open(path, encoding="utf-8", errors="replace") as file:
        return not any(line.strip() for line in file)


def load_hub_dataset(name: str, config_name: Optional[str]) -> datasets.DatasetDict:
    """A dataset from the Hub (or its cache); an unreachable Hub is reported with the local alternative."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and not hub_reachable():
        raise UserError(f"cannot load dataset {name!r}: the Hugging Face Hub ({constants.ENDPOINT}) cannot be "
                        "reached; pass local files (--train_file/--validation_file or --data_dir), or set "
                        "HF_HUB_OFFLINE=1 to use a cached copy.")
    try:
        return datasets.load_dataset(name, config_name)
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise UserError(f"could not load dataset {name!r} from the Hugging Face Hub ({type(error).__name__}); "
                        "without network access pass local files (--train_file/--validation_file or --data_dir).")


def limit_samples(dataset: datasets.Dataset, limit: Optional[int]) -> datasets.Dataset:
    """The first `limit` examples (all of them when limit is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.select(range(limit))


def require_columns(dataset: datasets.Dataset, columns: list[str], split: str, flag: str) -> None:
    """Raise a UserError when a split lacks a column the run needs."""
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise UserError(f"{split} data has no column {', '.join(map(repr, missing))} (columns: "
                        f"{', '.join(dataset.column_names)}); set {flag} to the right name.")

"""Token classification (named-entity recognition and other word tagging) on CoNLL files, JSON (Lines) or a Hub
dataset, following the Hugging Face example run_ner.py.

Every split becomes `tokens` (the words) and `ner_tags` (one tag per word, a ClassLabel). The tag names are the
training data's ClassLabel names when it has them (a Hub dataset), else its tags sorted: string tags as they are,
integer tags (JSON without ClassLabel names) as the integers written out ("0", "1", ...). Words are tokenised with
`is_split_into_words=True`; the first sub-token of a word carries its tag and the others -100 (not trained or scored),
or, with --label_all_tokens, the word's tag too (B-X becoming I-X when the data has I-X). Scores are seqeval's
entity-level precision, recall and F1 and its tag accuracy over the labelled positions.
"""
from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import datasets
import numpy as np
import tensorflow as tf

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import write_text
from tf_finetune.core.layout import predictions_file
from tf_finetune.core.progress import with_progress
from tf_finetune.data.files import limit_samples, load_data_file, load_generated, load_hub_dataset
from tf_finetune.metrics import compute_metrics, load_metric
from tf_finetune.models.functions import logits_function
from tf_finetune.models.loading import max_model_length
from tf_finetune.tasks.base import RunContext, Task, TaskSplit, read_text_inputs

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig

TOKENS = "tokens"
TAGS = "ner_tags"
WORD_IDS = "word_ids"  # bookkeeping: the word of each token (-1 for special tokens), to map predictions to words
IGNORE_INDEX = -100
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"
_CONLL_TYPES = (".txt", ".conll")
_JSON_TYPES = (".json", ".jsonl")
_METRIC = "seqeval"
_OVERALL = ("precision", "recall", "f1", "accuracy")


class TokenClassificationTask(Task):
    """One tag per word; scored per entity (seqeval), predictions written back in CoNLL format."""

    name = "ner"
    auto_model_class = "TFAutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    pipeline_tag = "token-classification"
    description = "named-entity recognition or other word tagging (one tag per word, CoNLL-2003 style)"
    data_formats = ("CoNLL .txt/.conll (token first, tag in --label_column_index or the last column, blank lines "
                    "between sentences), .json/.jsonl with tokens and ner_tags, or --dataset_name")
    reported_metrics = ("eval_precision, eval_recall, eval_f1 (entities, seqeval), eval_accuracy (tags), eval_loss; "
                        "per entity type with --return_entity_level_metrics")

    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        """train / validation / test with `tokens` and `ner_tags` (ClassLabel ids; none in test)."""
        raw, sources = self._read_splits(config)
        if "train" not in raw:
            raise UserError("the data has no train split; ner needs tagged training data (--train_file).")
        for split, dataset in raw.items():
            _check_examples(dataset, sources[split], tagged=split != "test")
        names = tag_names(raw["train"])
        return datasets.DatasetDict({split: _encode_tags(dataset, sources[split], names if split != "test" else None)
                                     for split, dataset in raw.items()})

    def model_config_kwargs(self, raw_datasets: datasets.DatasetDict, config: "TrainConfig") -> dict[str, Any]:
        names = raw_datasets["train"].features[TAGS].feature.names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    def tokenize(self, raw_datasets: datasets.DatasetDict, tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> dict[str, TaskSplit]:
        check_tokenizer(tokenizer, config.tokenizer_name or config.model_name_or_path)
        continuation = continuation_ids(raw_datasets["train"].features[TAGS].feature.names)
        max_length, label_all_tokens = config.max_seq_length, config.label_all_tokens

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(batch[TOKENS], is_split_into_words=True, truncation=True, max_length=max_length)
            word_ids = [encoded.word_ids(i) for i in range(len(batch[TOKENS]))]
            features = {**encoded, WORD_IDS: [[-1 if word is None else word for word in ids] for ids in word_ids]}
            if TAGS in batch:
                features["labels"] = [align_labels(ids, tags, label_all_tokens, continuation)
                                      for ids, tags in zip(word_ids, batch[TAGS])]
            return features

        splits = {}
        for split, examples in raw_datasets.items():
            examples = limit_samples(examples, config.max_samples(split))
            features = examples.map(encode, batched=True, remove_columns=examples.column_names,
                                    load_from_cache_file=not config.overwrite_cache,
                                    num_proc=config.preprocessing_num_workers, desc=f"Tokenising {split}")
            splits[split] = TaskSplit(examples, features)
        return splits

    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=config.pad_to_multiple_of,
                                                  return_tensors="np")

    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        return "eval_f1", True

    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        """The overall keys; --return_entity_level_metrics adds eval_<TYPE>_<precision|recall|f1|number> too."""
        load_metric(_METRIC)
        return ["eval_loss", *(f"eval_{key}" for key in _OVERALL)]

    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig", context: RunContext) -> dict[str, float]:
        """Mean loss per labelled token, and seqeval's scores of the tags at the labelled positions."""
        names = model.config.id2label
        total_loss, total_tokens = 0.0, 0
        predictions, references = [], []
        for features, labels in with_progress(tf_dataset, "Evaluating"):
            logits = logits_function(model)(features)
            labels = labels.numpy()
            labelled = labels != IGNORE_INDEX
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=np.where(labelled, labels, 0),
                                                                    logits=logits).numpy()
            total_loss += float(losses[labelled].sum())
            total_tokens += int(labelled.sum())
            for row_predictions, row_labels, row_labelled in zip(np.argmax(logits, -1), labels, labelled):
                predictions.append([names[int(i)] for i in row_predictions[row_labelled]])
                references.append([names[int(i)] for i in row_labels[row_labelled]])
        if total_tokens == 0:
            raise UserError("the validation split has no tagged word; give validation data with tags.")
        scores = compute_metrics(load_metric(_METRIC), predictions, references, zero_division=0)
        results = {"eval_loss": total_loss / total_tokens}
        results.update({f"eval_{key}": scores[f"overall_{key}"] for key in _OVERALL})
        if config.return_entity_level_metrics:
            results.update({f"eval_{key}": value for key, value in scores.items() if not key.startswith("overall_")})
        return results

    def predict(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                config: "TrainConfig", context: RunContext) -> list[list[str]]:
        """One tag per word of each test sentence (the tag of its first sub-token). Words cut off by
        --max_seq_length get the tag O."""
        rows = []
        for batch in with_progress(tf_dataset, "Predicting"):
            features = batch[0] if isinstance(batch, tuple) else batch
            rows.extend(np.argmax(logits_function(model)(features), -1))
        return [word_tags(example[TOKENS], word_ids, row, model.config.id2label)
                for example, word_ids, row in zip(split.examples, split.features[WORD_IDS], rows)]

    def write_predictions(self, predictions: Sequence[list[str]], split: TaskSplit, output_dir: str,
                          config: "TrainConfig") -> str:
        """Write `predict_results_ner.txt` in CoNLL format: `token TAG` per line, a blank line after each sentence."""
        path = os.path.join(output_dir, predictions_file(self.name, "txt"))
        blocks = ["".join(f"{token} {tag}\n" for token, tag in zip(tokens, tags))
                  for tokens, tags in zip(split.examples[TOKENS], predictions)]
        write_text(path, "\n".join(blocks))
        return path

    def predict_inputs(self, args: argparse.Namespace, tokenizer: "PreTrainedTokenizerBase") -> list[str]:
        """The texts; their words are the whitespace-separated parts (write `call .` to tag a full stop alone)."""
        check_tokenizer(tokenizer, args.model)
        return read_text_inputs(args.texts, args.file)

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", inputs: list[str],
                      args: argparse.Namespace) -> list[str]:
        """Per text: each word with its tag and probability, then its entities (TYPE and words), one per line."""
        from seqeval.metrics.sequence_labeling import get_entities

        max_length = max_model_length(model.config, tokenizer)
        lines: list[str] = []
        for text in inputs:
            words = text.split()
            encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                                return_tensors="np")
            probabilities = tf.nn.softmax(model(dict(encoded), training=False).logits[0]).numpy()
            tags = word_tags(words, [-1 if w is None else w for w in encoded.word_ids(0)],
                             np.argmax(probabilities, -1), model.config.id2label)
            scores = word_scores(encoded.word_ids(0), probabilities, len(words))
            if lines:
                lines.append("")
            lines += [f"{word}\t{tag}\t{score:.4f}" for word, tag, score in zip(words, tags, scores)]
            entities = get_entities(tags)
            lines.append("entities:" if entities else "entities: none")
            lines += [f"{kind}\t{' '.join(words[start:end + 1])}" for kind, start, end in entities]
        return lines

    def _read_splits(self, config: "TrainConfig") -> tuple[dict[str, datasets.Dataset], dict[str, str]]:
        """The raw splits and, for messages, where each comes from."""
        if config.dataset_name:
            hub = load_hub_dataset(config.dataset_name, config.dataset_config_name)
            raw = {split: hub[split] for split in ("train", "validation", "test") if split in hub}
            return raw, {split: f"the {split} split of {config.dataset_name}" for split in raw}
        files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
        if not files["train"] and config.do_train:
            raise UserError("ner needs --train_file (CoNLL .txt/.conll or .json/.jsonl) or --dataset_name.")
        if not files["validation"] and config.do_eval:
            raise UserError("ner needs --validation_file to evaluate; pass one or --do_eval false.")
        raw = {split: read_file(path, split, config.label_column_index, tagged=split != "test")
               for split, path in files.items() if path}
        return raw, {split: f"{split} file {path}" for split, path in files.items() if path}


def read_file(path: str, split: str, label_column_index: Optional[int], tagged: bool = True) -> datasets.Dataset:
    """A CoNLL or JSON (Lines) file as `tokens` and, when tagged, `ner_tags` columns."""
    extension = os.path.splitext(path)[1].lower()
    if extension in _JSON_TYPES:
        dataset = load_data_file(path, split, allowed=_JSON_TYPES)
        if TOKENS not in dataset.column_names or (tagged and TAGS not in dataset.column_names):
            needed = f"'{TOKENS}' (the words) and '{TAGS}' (one tag per word)" if tagged else f"'{TOKENS}'"
            raise UserError(f"{split} file {path} has no {needed} columns (columns: "
                            f"{', '.join(dataset.column_names)}); give each example {needed}.")
        return dataset
    if extension not in _CONLL_TYPES:
        raise UserError(f"{split} file {path} has an unsupported extension; use one of "
                        f"{', '.join(_CONLL_TYPES + _JSON_TYPES)}.")
    if not os.path.isfile(path):
        raise UserError(f"{split} file {path} does not exist; check the path.")
    return read_conll(path, split, label_column_index, tagged)


def read_conll(path: str, split: str, label_column_index: Optional[int], tagged: bool = True) -> datasets.Dataset:
    """A CoNLL file's sentences: whitespace-separated columns, the token first and the tag in column
    `label_column_index` (default: the last); blank lines and -DOCSTART- lines end a sentence. Untagged (test) files
    may hold the token alone.

    Read through `load_generated`, so the sentences and their tokenisation are cached on disk like other data.
    """
    words = datasets.List(datasets.Value("string"))
    return load_generated(_conll_sentences, path, split, datasets.Features(
        {TOKENS: words, TAGS: words} if tagged else {TOKENS: words}), where=f"{split} file {path}",
        label_column_index=label_column_index, tagged=tagged)


def _conll_sentences(path: str, where: str, label_column_index: Optional[int], tagged: bool,
                     version: tuple[int, int]) -> Iterator[dict[str, list[str]]]:
    """The sentences of a CoNLL file as {tokens, ner_tags} (tokens only for an untagged file)."""
    tokens: list[str] = []
    tags: list[str] = []
    columns = tag_column = None
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            parts = line.split()
            if not parts or parts[0] == DOCSTART:
                if tokens:
                    yield {TOKENS: tokens, TAGS: tags} if tagged else {TOKENS: tokens}
                tokens, tags = [], []
                continue
            if columns is None:
                columns = len(parts)
                tag_column = _tag_column(columns, label_column_index, f"{where} line {number}", tagged)
            elif len(parts) != columns:
                raise UserError(f"{where} line {number} has {len(parts)} column(s) where the lines before "
                                f"have {columns}; give every line the same columns (token first, then the tag).")
            tokens.append(parts[0])
            if tag_column is not None:
                tags.append(parts[tag_column])
    if tokens:
        yield {TOKENS: tokens, TAGS: tags} if tagged else {TOKENS: tokens}


def _tag_column(columns: int, label_column_index: Optional[int], where: str, tagged: bool) -> Optional[int]:
    """The column holding the tag, checked against the first line's columns (None: a test file of tokens only)."""
    if label_column_index is None:
        if columns > 1:
            return columns - 1
        if not tagged:
            return None
        raise UserError(f"{where} has only one column; give each line the token and its tag (e.g. `EU B-ORG`).")
    if label_column_index == 0:
        raise UserError("--label_column_index 0 is the token column; pass the column of the tags (counting from 0).")
    if label_column_index >= columns:
        if not tagged:
            return None
        raise UserError(f"{where} has {columns} column(s), but the tag column --label_column_index "
                        f"{label_column_index} needs at least {label_column_index + 1}; fix the file or the flag.")
    return label_column_index


def _check_examples(dataset: datasets.Dataset, source: str, tagged: bool) -> None:
    """Lists of words and (when tagged) one non-null tag per word in every example."""
    columns = [TOKENS, TAGS] if tagged else [TOKENS]
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise UserError(f"{source} has no {', '.join(map(repr, missing))} column (columns: "
                        f"{', '.join(dataset.column_names)}); give each example '{TOKENS}' and '{TAGS}'.")
    for column in columns:
        if not isinstance(dataset.features[column], (datasets.List, datasets.LargeList)):
            raise UserError(f"{source}: '{column}' holds {dataset.features[column]}, not a list per example; give "
                            "each example a list of words and a list of tags.")
    if not tagged:
        return
    for index, (tokens, tags) in enumerate(zip(dataset[TOKENS], dataset[TAGS])):
        if len(tokens) != len(tags):
            raise UserError(f"{source} example {index} (counting from 0) has {len(tokens)} tokens but {len(tags)} "
                            f"{TAGS}; give one tag per token.")
        if None in tags:
            raise UserError(f"{source} example {index} (counting from 0) has a tag that is null; give every token "
                            "a tag.")


def tag_names(train: datasets.Dataset) -> list[str]:
    """The tag names: the training data's ClassLabel names, else its tags sorted (integers as written out)."""
    feature = train.features[TAGS].feature
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return [str(tag) for tag in sorted({tag for tags in train[TAGS] for tag in tags})]


def _encode_tags(dataset: datasets.Dataset, source: str, names: Optional[list[str]]) -> datasets.Dataset:
    """`tokens` and `ner_tags` as ids of ClassLabel(names); tokens only when names is None (test). A cached map."""
    if names is None:
        return dataset.select_columns([TOKENS])
    feature = dataset.features[TAGS].feature
    given = feature.names if isinstance(feature, datasets.ClassLabel) else None
    index = {name: i for i, name in enumerate(names)}

    def encode(batch: dict[str, list], numbers: list[int]) -> dict[str, list]:
        ids = []
        for number, tags in zip(numbers, batch[TAGS]):
            row = []
            for tag in tags:
                name = given[tag] if given else str(tag)
                if name not in index:
                    raise UserError(f"{source} example {number} (counting from 0) has the tag {name!r}, which the "
                                    f"training data does not have (known tags: {', '.join(names)}); fix the tag or "
                                    "add it to the training data.")
                row.append(index[name])
            ids.append(row)
        return {TAGS: ids}

    features = datasets.Features({TOKENS: datasets.List(datasets.Value("string")),
                                  TAGS: datasets.List(datasets.ClassLabel(names=names))})
    return dataset.select_columns([TOKENS, TAGS]).map(encode, batched=True, with_indices=True, features=features,
                                                      desc="Reading tags")


def continuation_ids(names: list[str]) -> list[int]:
    """For each tag id, the id of a word's later sub-tokens under --label_all_tokens: I-X for B-X when the tags have
    I-X, else the same tag (as run_ner does)."""
    index = {name: i for i, name in enumerate(names)}
    return [index.get(f"I-{name[2:]}", i) if name.startswith("B-") else i for i, name in enumerate(names)]


def align_labels(word_ids: list[Optional[int]], tags: list[int], label_all_tokens: bool,
                 continuation: list[int]) -> list[int]:
    """Token labels from word tags: special tokens -100; a word's first sub-token its tag; its other sub-tokens -100,
    or with label_all_tokens the continuation of its tag."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(tags[word])
        else:
            labels.append(continuation[tags[word]] if label_all_tokens else IGNORE_INDEX)
        previous = word
    return labels


def word_tags(words: Sequence[str], word_ids: Sequence[int], predictions: np.ndarray,
              id2label: dict[int, str]) -> list[str]:
    """Each word's tag: the prediction at its first sub-token (word_ids -1 are special tokens); O for words the
    tokens do not reach (truncated)."""
    tags = [OUTSIDE] * len(words)
    seen = set()
    for position, word in enumerate(word_ids):
        if word >= 0 and word not in seen:
            seen.add(word)
            tags[word] = id2label[int(predictions[position])]
    return tags


def word_scores(word_ids: Sequence[Optional[int]], probabilities: np.ndarray, count: int) -> list[float]:
    """Each word's probability of its tag at its first sub-token (0 for truncated words)."""
    scores = [0.0] * count
    seen = set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            seen.add(word)
            scores[word] = float(probabilities[position].max())
    return scores


def check_tokenizer(tokenizer: "PreTrainedTokenizerBase", name: str) -> None:
    """A tokenizer that takes words already split (fast, and with add_prefix_space where byte-level BPE needs it)."""
    if not tokenizer.is_fast:
        raise UserError(f"the tokenizer of {name} is not a fast tokenizer; ner needs one (it maps tokens to words).")
    try:
        tokenizer([["a"]], is_split_into_words=True)
    except (ValueError, AssertionError) as error:  # GPT-2/RoBERTa-style tokenizers assert add_prefix_space
        raise UserError(f"the tokenizer of {name} cannot take words already split ({str(error).splitlines()[0]}); "
                        "save it with add_prefix_space=True and pass its folder as --tokenizer_name.") from error


TASKS = (TokenClassificationTask(),)

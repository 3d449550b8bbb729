"""Masked (mlm) and causal (clm) language modelling on plain text, your own files or a Hub dataset.

Texts are tokenised, concatenated and cut into blocks of --block_size tokens (or, with --line_by_line, kept one
example per text). The score is the mean loss per predicted token and its perplexity, exp(eval_loss). For mlm the
validation blocks are masked once, with the seed, so every epoch is scored on the same masked positions.
"""
from __future__ import annotations

import argparse
import logging
import math
from typing import TYPE_CHECKING, Any, Callable

import datasets
import numpy as np
import tensorflow as tf

from tf_finetune.core.errors import UserError
from tf_finetune.core.progress import with_progress
from tf_finetune.data.files import limit_samples, load_data_file, load_hub_dataset, require_columns
from tf_finetune.models.functions import model_function
from tf_finetune.models.loading import load_model_config, max_model_length
from tf_finetune.tasks.base import RunContext, Task, TaskSplit, text_pipeline

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig

logger = logging.getLogger(__name__)

TEXT = "text"
VALIDATION_SHARE = 0.05  # of the training texts, held out when no validation data is given (as HF's examples do)
IGNORE_INDEX = -100
_FILE_TYPES = (".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet")


class LanguageModelingTask(Task):
    """Reading, block grouping and perplexity evaluation shared by masked and causal language modelling."""

    data_formats = (".txt (one document per line), or .csv/.tsv/.json(l)/.parquet with --text_column, or "
                    "--dataset_name; cut into blocks of --block_size tokens")
    reported_metrics = "eval_loss (per predicted token), perplexity"
    option_fields = ("block_size",)  # texts are cut into blocks, not truncated to --max_seq_length

    causal: bool

    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        """train / validation splits with one `text` column: nested fields flattened, lists joined, blanks dropped."""
        if config.do_predict:
            raise UserError(f"{self.name} writes no test predictions; drop --do_predict and use "
                            "`python -m tf_finetune.predict` on the saved model.")
        if config.text_column and len(config.text_column) > 1:
            raise UserError(f"{self.name} reads one text column, got --text_column {' '.join(config.text_column)}.")
        if config.dataset_name:
            hub = load_hub_dataset(config.dataset_name, config.dataset_config_name)
            raw = {split: hub[split] for split in ("train", "validation") if split in hub}
        else:
            if config.do_train and not config.train_file:
                raise UserError(f"{self.name} needs --train_file (.txt with one document per line, or "
                                f"{', '.join(_FILE_TYPES[1:])} with --text_column) or --dataset_name.")
            files = {"train": config.train_file, "validation": config.validation_file}
            raw = {split: load_data_file(path, split, allowed=_FILE_TYPES) for split, path in files.items() if path}
        if not raw:
            raise UserError(f"{self.name} has no data: pass --train_file and/or --validation_file.")
        texts = {split: _texts(dataset, split, config) for split, dataset in raw.items()}
        if "validation" not in texts and config.do_eval:
            texts.update(split_off_validation(texts["train"], config))
        return datasets.DatasetDict(texts)

    def tokenize(self, raw_datasets: datasets.DatasetDict, tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> datasets.DatasetDict:
        self.prepare_tokenizer(tokenizer, config)
        block_size = self.block_size(tokenizer, config)
        options = {"batched": True, "load_from_cache_file": not config.overwrite_cache,
                   "num_proc": config.preprocessing_num_workers}

        line_by_line = config.line_by_line  # the closure holds only what it needs, so the map cache key is stable

        def encode(batch: dict[str, list]) -> dict[str, list]:
            if line_by_line:
                return tokenizer(batch[TEXT], truncation=True, max_length=block_size)
            return tokenizer(batch[TEXT], verbose=False)  # long texts are fine: they are cut into blocks next

        splits = {}
        for split, dataset in raw_datasets.items():
            dataset = dataset.map(encode, remove_columns=dataset.column_names, desc=f"Tokenising {split}", **options)
            if not config.line_by_line:
                dataset = dataset.map(group_texts, fn_kwargs={"block_size": block_size},
                                      desc=f"Grouping {split} into blocks of {block_size}", **options)
                if len(dataset) == 0:
                    raise UserError(f"the {split} texts make no block of {block_size} tokens; pass a smaller "
                                    "--block_size, more text, or --line_by_line.")
            blocks = self.add_labels(limit_samples(dataset, config.max_samples(split)), split, tokenizer, config)
            splits[split] = TaskSplit(examples=blocks, features=blocks)  # an example is a block (or a line)
        return splits

    def prepare_tokenizer(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig") -> None:
        """Check (or complete) the special tokens the task needs."""

    def add_labels(self, dataset: datasets.Dataset, split: str, tokenizer: "PreTrainedTokenizerBase",
                   config: "TrainConfig") -> datasets.Dataset:
        """The split as the collator expects it (fixed `labels` where they are not drawn per batch)."""
        return dataset

    @staticmethod
    def block_size(tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig") -> int:
        """--block_size, lowered to the longest input the model accepts (with a warning, as run_mlm/run_clm do)."""
        limit = max_model_length(load_model_config(config.model_name_or_path), tokenizer)
        if config.block_size > limit:
            logger.warning("--block_size %d is more than %s accepts; using --block_size %d.", config.block_size,
                           config.model_name_or_path, limit)
            return limit
        return config.block_size

    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        return padding_collator(tokenizer, config)

    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        return "eval_loss", False

    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        return ["eval_loss", "perplexity"]

    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig", context: RunContext) -> dict[str, float]:
        """Mean loss per labelled token over the whole split, and its perplexity."""
        step = _token_loss_step(model, self.causal)
        total_loss, total_tokens = 0.0, 0
        for features, labels in with_progress(tf_dataset, "Evaluating"):
            loss, tokens = step(features if isinstance(features, dict) else {"input_ids": features}, labels)
            total_loss += float(loss)
            total_tokens += int(tokens)
        if total_tokens == 0:
            raise UserError("the validation split has no token to predict; give more validation text.")
        eval_loss = total_loss / total_tokens
        return {"eval_loss": eval_loss, "perplexity": perplexity(eval_loss)}


class MaskedLanguageModelingTask(LanguageModelingTask):
    """BERT-style masked language modelling: --mlm_probability of the tokens are masked and predicted."""

    name = "mlm"
    auto_model_class = "TFAutoModelForMaskedLM"
    pipeline_tag = "fill-mask"
    description = "masked language modelling: --mlm_probability of the tokens masked and predicted"
    option_fields = ("block_size", "mlm_probability")
    causal = False

    def prepare_tokenizer(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig") -> None:
        if tokenizer.mask_token is None:
            raise UserError(f"the tokenizer of {config.tokenizer_name or config.model_name_or_path} has no mask "
                            "token, so it cannot do masked language modelling; use --task clm for causal models.")

    def add_labels(self, dataset: datasets.Dataset, split: str, tokenizer: "PreTrainedTokenizerBase",
                   config: "TrainConfig") -> datasets.Dataset:
        if split == "train":
            return dataset  # masked afresh in every batch by the training collator
        masked = mask_once(dataset, tokenizer, config.mlm_probability, config.seed, not config.overwrite_cache)
        if count_labelled(masked) == 0:
            raise UserError(f"no {split} token was masked (--mlm_probability {config.mlm_probability}); give more "
                            f"{split} text or a larger --mlm_probability.")
        return masked

    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        if not training:
            return padding_collator(tokenizer, config)
        from transformers import DataCollatorForLanguageModeling

        # NumPy's global generator, which the training input reseeds for every batch from (seed, epoch, batch): a
        # batch's masks depend on nothing else, so a resumed run masks as the uninterrupted one did.
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability,
                                               pad_to_multiple_of=config.pad_to_multiple_of, return_tensors="np")

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top_k", type=int, default=5, help="fill-mask: candidate tokens per mask.")

    def predict_inputs(self, args: argparse.Namespace, tokenizer: "PreTrainedTokenizerBase") -> list[str]:
        """The texts, each of which must hold the tokenizer's mask token."""
        if args.top_k <= 0:
            raise UserError(f"--top_k must be a positive number, got {args.top_k}.")
        texts = super().predict_inputs(args, tokenizer)
        if tokenizer.mask_token is None:
            raise UserError(f"the tokenizer of {args.model} has no mask token, so it cannot fill masks; try --task "
                            "text-generation.")
        for number, text in enumerate(texts, start=1):
            if tokenizer.mask_token not in text:
                raise UserError(f"input {number} has no {tokenizer.mask_token} token ({text[:60]!r}); put "
                                f"{tokenizer.mask_token} where the word to predict goes.")
        return texts

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", inputs: list[str],
                      args: argparse.Namespace) -> list[str]:
        """Each text, then its top-k candidates with scores (per mask when there are several)."""
        fill = text_pipeline(self.pipeline_tag, model, tokenizer)
        lines = []
        for text in inputs:
            results = fill(text, top_k=args.top_k)
            per_mask = results if isinstance(results[0], list) else [results]
            lines.append(text)
            for number, candidates in enumerate(per_mask, start=1):
                if len(per_mask) > 1:
                    lines.append(f"  mask {number}:")
                lines += [f"  {candidate['token_str']:<20} {candidate['score']:.4f}" for candidate in candidates]
        return lines


class CausalLanguageModelingTask(LanguageModelingTask):
    """GPT-style causal language modelling: every next token is predicted (labels = input_ids, shifted inside)."""

    name = "clm"
    auto_model_class = "TFAutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    pipeline_tag = "text-generation"
    description = "causal language modelling: every next token predicted"
    causal = True

    def prepare_tokenizer(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig") -> None:
        if tokenizer.pad_token is not None:
            return
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of {config.tokenizer_name or config.model_name_or_path} has neither a "
                            "padding nor an end-of-sequence token; add a pad_token to it.")
        logger.info("The tokenizer has no padding token; padding with its end-of-sequence token %r (padding is "
                    "masked out of the loss).", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token

    def add_labels(self, dataset: datasets.Dataset, split: str, tokenizer: "PreTrainedTokenizerBase",
                   config: "TrainConfig") -> datasets.Dataset:
        return dataset.map(lambda batch: {"labels": batch["input_ids"]}, batched=True,
                           load_from_cache_file=not config.overwrite_cache, desc=f"Labelling {split}")

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max_new_tokens", type=int, default=20, help="text-generation: tokens to add (greedy).")

    def predict_inputs(self, args: argparse.Namespace, tokenizer: "PreTrainedTokenizerBase") -> list[str]:
        if args.max_new_tokens <= 0:
            raise UserError(f"--max_new_tokens must be a positive number, got {args.max_new_tokens}.")
        return super().predict_inputs(args, tokenizer)

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase", inputs: list[str],
                      args: argparse.Namespace) -> list[str]:
        """Each text continued greedily by --max_new_tokens tokens."""
        outputs = text_pipeline(self.pipeline_tag, model, tokenizer)(inputs, max_new_tokens=args.max_new_tokens,
                                                                    do_sample=False)
        return [output[0]["generated_text"] for output in outputs]


def group_texts(batch: dict[str, list[list[int]]], block_size: int) -> dict[str, list[list[int]]]:
    """Concatenate a batch of tokenised texts and cut it into blocks of block_size; the remainder is dropped."""
    concatenated = {key: [token for example in values for token in example] for key, values in batch.items()}
    total = len(concatenated["input_ids"]) // block_size * block_size
    return {key: [values[i:i + block_size] for i in range(0, total, block_size)]
            for key, values in concatenated.items()}


def mask_once(dataset: datasets.Dataset, tokenizer: "PreTrainedTokenizerBase", mlm_probability: float, seed: int,
              load_from_cache_file: bool = True) -> datasets.Dataset:
    """Mask every example once, as the training collator would: example i's mask depends only on (seed, i).

    The result holds the masked `input_ids` and `labels` (-100 where nothing is predicted).
    """
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, return_tensors="np")

    def mask(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        input_ids, labels = [], []
        for ids, index in zip(batch["input_ids"], indices):
            collator.generator = np.random.default_rng([seed, index])
            masked, label = collator.numpy_mask_tokens(np.array([ids], dtype=np.int64))
            input_ids.append(masked[0])
            labels.append(label[0])
        return {"input_ids": input_ids, "labels": labels}

    return dataset.map(mask, batched=True, with_indices=True, load_from_cache_file=load_from_cache_file,
                       desc="Masking validation once")


def count_labelled(dataset: datasets.Dataset) -> int:
    """How many tokens of the split have a label (are predicted), counted in Arrow without loading the split."""
    import pyarrow.compute as pc

    labels = pc.list_flatten(dataset.data.column("labels"))
    return pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py() or 0


def padding_collator(tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig") -> Callable[[list[dict]], dict]:
    """Pads input_ids/attention_mask with the pad token and labels with -100, into NumPy arrays."""
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=config.pad_to_multiple_of,
                                              label_pad_token_id=IGNORE_INDEX, return_tensors="np")


def perplexity(loss: float) -> float:
    """exp(loss), infinite when that overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _token_loss_step(model: "TFPreTrainedModel", causal: bool) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """A compiled step returning (sum of token losses, number of labelled tokens) of one batch; one per model.

    A masked LM whose head can be applied to the labelled positions alone (`head_applies_to_positions`) gets logits
    there only, (masked tokens, vocabulary), instead of (batch, length, vocabulary) for every token."""
    def build(model_ref: Callable[[], "TFPreTrainedModel"]) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
        at_positions = not causal and head_applies_to_positions(model_ref())

        @tf.function(reduce_retracing=True)
        def step(features: dict[str, tf.Tensor], labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if at_positions:
                positions = tf.where(tf.not_equal(labels, IGNORE_INDEX))
                logits, labels = _logits_at(model_ref(), features, positions), tf.gather_nd(labels, positions)
            else:
                logits = tf.cast(model_ref()(features, training=False).logits, tf.float32)
                if causal:
                    logits, labels = logits[:, :-1], labels[:, 1:]
            labelled = tf.not_equal(labels, IGNORE_INDEX)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.where(labelled, labels, tf.zeros_like(labels)), logits=logits)
            return tf.reduce_sum(tf.where(labelled, losses, 0.0)), tf.reduce_sum(tf.cast(labelled, tf.int64))

        return step

    return model_function(model, f"token_loss(causal={causal})", build)


def head_applies_to_positions(model: "TFPreTrainedModel") -> bool:
    """Whether the model's logits are its LM head (`get_lm_head()`) over its main layer's hidden states, so the head
    can run on chosen positions only: checked once on the model's dummy inputs against its full logits (DistilBERT,
    for one, keeps part of its head outside `get_lm_head()`)."""
    features = model.dummy_inputs
    try:
        full = tf.cast(model(features, training=False).logits, tf.float32)
        positions = tf.where(tf.ones_like(features["input_ids"], dtype=tf.bool))
        at_positions = _logits_at(model, features, positions)
    except (AttributeError, NotImplementedError, TypeError, ValueError):  # no main layer or LM head to call apart
        return False
    return bool(np.allclose(tf.gather_nd(full, positions).numpy(), at_positions.numpy(), rtol=1e-2, atol=1e-2))


def _logits_at(model: "TFPreTrainedModel", features: dict[str, tf.Tensor], positions: tf.Tensor) -> tf.Tensor:
    """Float32 logits (positions, vocabulary) of the LM head at `positions` (batch, token) of the hidden states."""
    hidden = getattr(model, model.base_model_prefix)(features, training=False)[0]
    return tf.cast(model.get_lm_head()(tf.gather_nd(hidden, positions)[tf.newaxis], training=False)[0], tf.float32)


def _texts(dataset: datasets.Dataset, split: str, config: "TrainConfig") -> datasets.Dataset:
    """The split's texts as one `text` column: struct fields flattened (answers.text), lists joined, blanks dropped."""
    dataset = dataset.flatten()
    column = config.text_column[0] if config.text_column else TEXT
    if not config.text_column and TEXT not in dataset.column_names:
        raise UserError(f"{split} data has no 'text' column (columns: {', '.join(dataset.column_names)}); set "
                        "--text_column (nested fields as answers.text).")
    require_columns(dataset, [column], split, "--text_column")
    if not _holds_text(dataset.features[column]):
        raise UserError(f"{split} column {column!r} holds {dataset.features[column]}, not text; set --text_column "
                        "to a column of strings or lists of strings.")

    def join(batch: dict[str, list]) -> dict[str, list[str]]:
        texts = (" ".join(part for part in value if part) if isinstance(value, list) else value or ""
                 for value in batch[column])
        return {TEXT: [text for text in texts if text.strip()]}

    dataset = dataset.map(join, batched=True, remove_columns=dataset.column_names,
                          load_from_cache_file=not config.overwrite_cache, desc=f"Reading {split} texts")
    if len(dataset) == 0:
        raise UserError(f"{split} data holds no text in column {column!r}; give a file with text.")
    return dataset


def _holds_text(feature: Any) -> bool:
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string")
    return isinstance(feature, (datasets.List, datasets.LargeList)) and _holds_text(feature.feature)


def split_off_validation(train: datasets.Dataset, config: "TrainConfig") -> dict[str, datasets.Dataset]:
    """Hold out VALIDATION_SHARE of the training examples (texts, conversations; at least one), chosen with the seed."""
    if len(train) < 2:
        raise UserError("the training data has a single example, too little to hold some out for validation; pass "
                        "--validation_file or --do_eval false.")
    parts = train.train_test_split(test_size=VALIDATION_SHARE, seed=config.seed,
                                   load_from_cache_file=not config.overwrite_cache)
    logger.info("No validation data given: holding out %d of %d training examples (%d%%, seed %d) for validation.",
                len(parts["test"]), len(train), round(VALIDATION_SHARE * 100), config.seed)
    return {"train": parts["train"], "validation": parts["test"]}


TASKS = (MaskedLanguageModelingTask(), CausalLanguageModelingTask())

"""Extractive question answering (SQuAD v1.1 / v2.0): the answer is a span of the context, found by start and end
logits (TFAutoModelForQuestionAnswering), as Hugging Face's run_qa.py and utils_qa.py do it.

An example is a question. A context longer than --max_seq_length is cut into windows that overlap by --doc_stride
tokens; a training window whose context does not hold the answer points both positions at the CLS token (as does an
unanswerable SQuAD v2.0 question). Evaluation takes, per question and over its windows, the --n_best_size best start
and end logits, keeps valid spans (inside the context, end >= start, at most --max_answer_length tokens) and answers
with the best one's text, cut from the original context by the token offsets; with --version_2_with_negative it
answers "" when the null (CLS) score beats the best span's by more than --null_score_diff_threshold.

Results are the official SQuAD scores (bundled `squad` / `squad_v2` metrics): eval_exact_match and eval_f1 (v1.1),
eval_exact, eval_f1, eval_total, eval_best_* and, when the split has such questions, eval_HasAns_* / eval_NoAns_*
(v2.0). No eval_loss is reported (run_qa reports none: windows without the answer make the loss ill-defined).

Questions without an answer in a training or validation file are an error unless --version_2_with_negative is given
(they would otherwise be trained as "the answer is the CLS token" and scored as unanswerable without saying so).
"""
from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

import datasets
import numpy as np

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json, write_json
from tf_finetune.core.layout import RUN_CONFIG_FILE, predictions_file
from tf_finetune.core.progress import with_progress
from tf_finetune.data.files import limit_samples, load_hub_dataset
from tf_finetune.metrics import compute_metrics, load_metric
from tf_finetune.tasks.base import RunContext, Task, TaskSplit, text_pipeline
from tf_finetune.tasks.qa_files import (
    ANSWERS,
    CONTEXT,
    ID,
    QUESTION,
    check_answer_starts,
    check_answerable,
    read_qa_file,
    read_question_lines,
    standardise,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig

logger = logging.getLogger(__name__)


class QuestionAnsweringTask(Task):
    """SQuAD-style extractive question answering over your own files or a Hub dataset such as squad."""

    name = "qa"
    auto_model_class = "TFAutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    pipeline_tag = "question-answering"
    one_feature_per_example = False  # windows name their question in example_id
    option_fields = ("max_seq_length", "doc_stride")
    description = ("extractive question answering (SQuAD v1.1, or v2.0 with --version_2_with_negative): the answer "
                   "is a span of the context")
    data_formats = ("SQuAD JSON ({\"data\": [{\"paragraphs\": [{\"context\", \"qas\"}]}]}), or JSON Lines / a JSON "
                    "list of {id, question, context, answers: {text: [...], answer_start: [...]}}; or --dataset_name")
    reported_metrics = ("eval_exact_match, eval_f1 (SQuAD v1.1); v2.0: eval_exact, eval_f1, eval_HasAns_*, "
                        "eval_NoAns_*, eval_best_*")

    # Reading
    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        """train / validation / test splits with columns id, title, context, question, answers."""
        if config.dataset_name:
            hub = load_hub_dataset(config.dataset_name, config.dataset_config_name)
            raw = {split: hub[split] for split in ("train", "validation", "test") if split in hub}
            sources = {split: f"{config.dataset_name} {split} split" for split in raw}
        else:
            if config.do_train and not config.train_file:
                raise UserError("qa needs --train_file (SQuAD JSON or JSON Lines) or --dataset_name.")
            if config.do_eval and not config.validation_file:
                raise UserError("qa needs --validation_file to evaluate; pass one or --do_eval false.")
            files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
            raw = {split: read_qa_file(path, split) for split, path in files.items() if path}
            sources = {split: f"{split} file {path}" for split, path in files.items() if path}
        raw = {split: standardise(dataset, split, sources[split]) for split, dataset in raw.items()}
        for split in ("train", "validation"):
            if split in raw and not config.version_2_with_negative:
                check_answerable(raw[split], sources[split])
        if "train" in raw:
            raw["train"] = check_answer_starts(raw["train"], sources["train"], config.skip_bad_answers)
        return datasets.DatasetDict(raw)

    # Tokenising
    def tokenize(self, raw_datasets: datasets.DatasetDict, tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> dict[str, TaskSplit]:
        """Questions (max_*_samples applied) and their windows: training windows carry start/end positions, the
        others `example_id` and `offset_mapping` (None outside the context) for post-processing."""
        splits = {}
        for split, examples in raw_datasets.items():
            examples = limit_samples(examples, config.max_samples(split))
            check_window_room(examples, tokenizer, config, split)
            features = examples.map(encode_windows, batched=True, remove_columns=examples.column_names,
                                    fn_kwargs={"tokenizer": tokenizer, "max_seq_length": config.max_seq_length,
                                               "doc_stride": config.doc_stride, "training": split == "train"},
                                    load_from_cache_file=not config.overwrite_cache,
                                    num_proc=config.preprocessing_num_workers, desc=f"Tokenising {split}")
            logger.info("%s: %d questions in %d windows.", split, len(examples), len(features))
            splits[split] = TaskSplit(examples, features)
        return splits

    def collator(self, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                 training: bool) -> Callable[[list[dict]], dict]:
        from transformers import DataCollatorWithPadding

        # start/end positions are scalars, so they pass through the padding untouched.
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=config.pad_to_multiple_of, return_tensors="np")

    # Scoring
    def main_metric(self, config: "TrainConfig", model_config: "PretrainedConfig") -> tuple[str, bool]:
        return "eval_f1", True

    def result_keys(self, config: "TrainConfig", model_config: "PretrainedConfig") -> list[str]:
        """The metric's keys on a one-question sample, without the HasAns_/NoAns_ ones (present only when the
        split has answerable / unanswerable questions)."""
        sample = squad_inputs(["0"], ["a"], [{"text": ["a"], "answer_start": [0]}], config.version_2_with_negative)
        scores = compute_metrics(load_metric(metric_name(config)), *sample)
        return [f"eval_{key}" for key in scores if not key.startswith(("HasAns_", "NoAns_"))]

    def evaluate(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig", context: RunContext) -> dict[str, float]:
        answers = self._answers(model, tf_dataset, split, config)
        sample = squad_inputs(split.examples[ID], answers, split.examples[ANSWERS], config.version_2_with_negative)
        scores = compute_metrics(load_metric(metric_name(config)), *sample)
        return {f"eval_{key}": value for key, value in scores.items()}

    # Predictions of --do_predict
    def predict(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                config: "TrainConfig", context: RunContext) -> dict[str, str]:
        """Question id -> answer text ("" for no answer)."""
        return dict(zip(split.examples[ID], self._answers(model, tf_dataset, split, config)))

    def write_predictions(self, predictions: dict[str, str], split: TaskSplit, output_dir: str,
                          config: "TrainConfig") -> str:
        """Write `predict_results_qa.json`, {question id: answer text}, atomically; returns its path."""
        path = os.path.join(output_dir, predictions_file(self.name, "json"))
        write_json(path, predictions)
        return path

    # The predict command
    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--question", help="question-answering: the question to answer from --context.")
        parser.add_argument("--context", help="question-answering: the text that holds the answer to --question.")

    def predict_inputs(self, args: argparse.Namespace, tokenizer: "PreTrainedTokenizerBase") -> list[dict[str, str]]:
        """--question with --context, followed by the JSON objects of --file (one {question, context} a line)."""
        if args.texts:
            raise UserError("question-answering takes --question and --context (or --file), not TEXT arguments; "
                            "put the question in --question and the text holding the answer in --context.")
        inputs = []
        if args.question is not None or args.context is not None:
            if not (args.question or "").strip() or not (args.context or "").strip():
                raise UserError("question-answering needs both --question and --context (non-blank); pass "
                                "--question \"...\" --context \"...\".")
            inputs.append({QUESTION: args.question, CONTEXT: args.context})
        if args.file:
            inputs += read_question_lines(args.file)
        if not inputs:
            raise UserError("no question: pass --question \"...\" --context \"...\", or --file with one JSON object "
                            "{\"question\": ..., \"context\": ...} per line.")
        return inputs

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase",
                      inputs: list[dict[str, str]], args: argparse.Namespace) -> list[str]:
        """One line per question: answer, score (start x end probability, from transformers' pipeline) and the
        question. Windows, answer length and no-answer handling follow the run that trained the model (its
        run_config.json), else the pipeline's defaults."""
        answer = text_pipeline(self.pipeline_tag, model, tokenizer)
        settings = pipeline_settings(args.model)
        lines = []
        for item in inputs:
            result = answer(question=item[QUESTION], context=item[CONTEXT], **settings)
            lines.append(f"{result['answer']}\t{result['score']:.4f}\t{item[QUESTION]}")
        return lines

    def _answers(self, model: "TFPreTrainedModel", tf_dataset: Any, split: TaskSplit,
                 config: "TrainConfig") -> list[str]:
        start_logits, end_logits = window_logits(model, tf_dataset)
        return best_answers(split.examples, split.features, start_logits, end_logits, config)


def pipeline_settings(model_dir: str) -> dict[str, Any]:
    """The question-answering pipeline's options from the training run's run_config.json (none without one)."""
    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    run = read_json(path)
    return {"max_seq_len": run["max_seq_length"], "doc_stride": run["doc_stride"],
            "max_answer_len": run["max_answer_length"], "handle_impossible_answer": run["version_2_with_negative"]}


# Reading


# Tokenising

def check_window_room(examples: datasets.Dataset, tokenizer: "PreTrainedTokenizerBase", config: "TrainConfig",
                      split: str) -> None:
    """Every window must hold the question and more context tokens than --doc_stride (the tokenizer's rule)."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer([q.lstrip() for q in examples[QUESTION]],
                                             add_special_tokens=False)["input_ids"]]
    longest = int(np.argmax(lengths))
    room = config.max_seq_length - specials - lengths[longest]
    qid = examples[longest][ID]
    if room <= 0:
        raise UserError(f"{split} question {qid!r} has {lengths[longest]} tokens, which with {specials} special tokens "
                        f"leave no room for its context in --max_seq_length {config.max_seq_length}; shorten the "
                        f"question or pass --max_seq_length {lengths[longest] + specials + config.doc_stride + 1} or "
                        "more.")
    if config.doc_stride >= room:
        raise UserError(f"--doc_stride {config.doc_stride} must be smaller than the {room} context tokens a window of "
                        f"--max_seq_length {config.max_seq_length} holds next to the longest {split} question "
                        f"({qid!r}, {lengths[longest]} tokens); pass a smaller --doc_stride or a larger "
                        "--max_seq_length, e.g. --max_seq_length 384 --doc_stride 128 as run_qa.")


def encode_windows(batch: dict[str, list], tokenizer: "PreTrainedTokenizerBase", max_seq_length: int,
                   doc_stride: int, training: bool) -> dict[str, list]:
    """The windows of a batch of questions: question and context (context first when the tokenizer pads on the
    left), only the context truncated, consecutive windows sharing doc_stride tokens, no padding."""
    question_first = tokenizer.padding_side == "right"
    questions = [question.lstrip() for question in batch[QUESTION]]
    pair = (questions, batch[CONTEXT]) if question_first else (batch[CONTEXT], questions)
    encoded = tokenizer(*pair, truncation="only_second" if question_first else "only_first",
                        max_length=max_seq_length, stride=doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
    example_indices = encoded.pop("overflow_to_sample_mapping")
    all_offsets = encoded.pop("offset_mapping")
    context_sequence = 1 if question_first else 0
    if training:
        positions = [answer_positions(offsets, encoded.sequence_ids(i), context_sequence,
                                      batch[ANSWERS][example_indices[i]], cls_index(encoded["input_ids"][i], tokenizer))
                     for i, offsets in enumerate(all_offsets)]
        encoded["start_positions"] = [start for start, _ in positions]
        encoded["end_positions"] = [end for _, end in positions]
    else:
        encoded["example_id"] = [batch[ID][index] for index in example_indices]
        encoded["offset_mapping"] = [
            [offset if sequence == context_sequence else None for offset, sequence in zip(offsets,
                                                                                          encoded.sequence_ids(i))]
            for i, offsets in enumerate(all_offsets)]
    return encoded


def cls_index(input_ids: list[int], tokenizer: "PreTrainedTokenizerBase") -> int:
    """Where the CLS (else BOS) token is: the position that means 'no answer here'."""
    for token_id in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if token_id is not None and token_id in input_ids:
            return input_ids.index(token_id)
    return 0


def answer_positions(offsets: list[tuple[int, int]], sequence_ids: list, context_sequence: int,
                     answers: dict[str, list], cls: int) -> tuple[int, int]:
    """The first and last token of the (first) answer in this window, or (cls, cls) when the window does not hold
    all of it or the question has no answer."""
    if not answers["text"]:
        return cls, cls
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context = [k for k, sequence in enumerate(sequence_ids) if sequence == context_sequence]
    if offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return cls, cls
    start = next(k for k in reversed(context) if offsets[k][0] <= start_char)
    end = next(k for k in context if offsets[k][1] >= end_char)
    return start, end


# Post-processing

def window_logits(model: "TFPreTrainedModel", tf_dataset: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every window, in order, each cut to the window's own tokens (batches are padded to
    different lengths, and padding may be on either side)."""
    starts, ends = [], []
    for batch in with_progress(tf_dataset, "Answering"):
        features = batch[0] if isinstance(batch, tuple) else batch
        outputs = model.predict_on_batch(features)
        for start, end, mask in zip(outputs.start_logits, outputs.end_logits, np.asarray(features["attention_mask"])):
            keep = mask.astype(bool)
            starts.append(np.asarray(start, dtype=np.float32)[keep])
            ends.append(np.asarray(end, dtype=np.float32)[keep])
    return starts, ends


def best_answers(examples: datasets.Dataset, features: datasets.Dataset, start_logits: list[np.ndarray],
                 end_logits: list[np.ndarray], config: "TrainConfig") -> list[str]:
    """Each question's answer text: the best valid span over its windows (utils_qa.postprocess_qa_predictions);
    with --version_2_with_negative, "" when the lowest null score of its windows beats it by more than
    --null_score_diff_threshold."""
    windows: dict[str, list[int]] = defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        windows[example_id].append(index)
    all_offsets = features["offset_mapping"]
    answers = []
    for qid, context in zip(examples[ID], examples[CONTEXT]):
        best, null_score = None, None
        for index in windows[qid]:
            starts, ends = start_logits[index], end_logits[index]
            window_null = float(starts[0] + ends[0])
            null_score = window_null if null_score is None else min(null_score, window_null)
            span = best_span(starts, ends, all_offsets[index], config.n_best_size, config.max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = span
        if best is None or (config.version_2_with_negative and
                            null_score - best[0] > config.null_score_diff_threshold):
            answers.append("")
        else:
            answers.append(context[best[1]:best[2]])
    return answers


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: list, n_best_size: int,
              max_answer_length: int) -> tuple[float, int, int] | None:
    """(score, first character, end character) of the window's best valid span among its n_best_size best starts
    and ends, or None when no pair makes a valid span."""
    best = None
    ends = np.argsort(end_logits)[::-1][:n_best_size]
    for start in np.argsort(start_logits)[::-1][:n_best_size]:
        for end in ends:
            if offsets[start] is None or offsets[end] is None or not 0 <= end - start < max_answer_length:
                continue
            score = float(start_logits[start] + end_logits[end])
            if best is None or score > best[0]:
                best = (score, offsets[start][0], offsets[end][1])
    return best


def metric_name(config: "TrainConfig") -> str:
    """The bundled evaluate metric: squad, or squad_v2 with --version_2_with_negative."""
    return "squad_v2" if config.version_2_with_negative else "squad"


def squad_inputs(ids: list[str], answers: list[str], gold: list[dict], version_2: bool) -> tuple[list, list]:
    """(predictions, references) as evaluate's squad / squad_v2 metrics take them; no-answer probability 0 as
    run_qa passes it."""
    predictions = [{"id": qid, "prediction_text": text, **({"no_answer_probability": 0.0} if version_2 else {})}
                   for qid, text in zip(ids, answers)]
    references = [{"id": qid, "answers": answer} for qid, answer in zip(ids, gold)]
    return predictions, references


TASKS = (QuestionAnsweringTask(),)

"""Question-answering data: SQuAD v1.1/v2.0 JSON and flat JSON Lines read into one row per question, checked."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import datasets

from tf_finetune.core.errors import UserError
from tf_finetune.data.files import load_data_file, load_generated, load_split

logger = logging.getLogger(__name__)

ID, TITLE, CONTEXT, QUESTION, ANSWERS = "id", "title", "context", "question", "answers"
RAW_FEATURES = datasets.Features({
    ID: datasets.Value("string"), TITLE: datasets.Value("string"), CONTEXT: datasets.Value("string"),
    QUESTION: datasets.Value("string"),
    ANSWERS: {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int32"))},
})
_EXTENSIONS = (".json", ".jsonl")


def read_qa_file(path: str, split: str) -> datasets.Dataset:
    """A SQuAD JSON file flattened to one row per question; or, as they are, the flat rows of a JSON Lines file, a
    JSON list or a JSON object's "data" list (what run_qa reads)."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json" and os.path.isfile(path):
        with open(path, encoding="utf-8") as file:
            try:
                content = json.load(file)
            except json.JSONDecodeError:
                content = None  # JSON Lines under a .json name: the json builder reads it
        if isinstance(content, dict):
            data = content.get("data")
            if not isinstance(data, list):
                raise UserError(f"{split} file {path} is a JSON object without a 'data' list; give SQuAD JSON "
                                "({\"data\": [{\"paragraphs\": [...]}]}) or JSON Lines with one question a line.")
            if data and isinstance(data[0], dict) and "paragraphs" not in data[0]:  # run_qa's {"data": [flat rows]}
                return load_split("json", split, path, field="data")
            return read_squad(path, split)
    return load_data_file(path, split, allowed=_EXTENSIONS)


def read_squad(path: str, split: str) -> datasets.Dataset:
    """A SQuAD JSON file as one row per question, through `load_generated` (cached on disk like other data)."""
    return load_generated(squad_rows, path, split, RAW_FEATURES, source=f"{split} file {path}")


def squad_rows(path: str, source: str, version: tuple[int, int]) -> Iterator[dict[str, Any]]:
    """One row per question of SQuAD's articles -> paragraphs -> qas; an impossible (v2.0) question has no answers."""
    with open(path, encoding="utf-8") as file:
        articles = json.load(file)["data"]
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, source, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, source, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, source, where)):
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                if not isinstance(answers, list) or not all(
                        isinstance(answer, dict) and isinstance(answer.get("text"), str) and
                        isinstance(answer.get("answer_start"), int) for answer in answers):
                    raise UserError(f"{source}: {where}.qas[{q}] has answers that are not a list of {{\"text\": "
                                    "string, \"answer_start\": integer} objects; fix the file.")
                yield {QUESTION: _field(qa, "question", str, source, f"{where}.qas[{q}]"),
                       ID: str(_field(qa, "id", (str, int), source, f"{where}.qas[{q}]")),
                       TITLE: str(article.get("title", "")), CONTEXT: context,
                       ANSWERS: {"text": [answer["text"] for answer in answers],
                                 "answer_start": [answer["answer_start"] for answer in answers]}}


def _field(node: Any, key: str, kind: Any, source: str, where: str) -> Any:
    """node[key], which must be of `kind`."""
    if not isinstance(node, dict) or not isinstance(node.get(key), kind):
        raise UserError(f"{source}: {where} has no {key!r} {'list' if kind is list else 'string'}, as SQuAD JSON "
                        "needs; fix the file.")
    return node[key]


def standardise(dataset: datasets.Dataset, split: str, source: str) -> datasets.Dataset:
    """The split with exactly RAW_FEATURES' columns (title "" and, in test data, no answers when absent) and
    unique ids."""
    needed = [ID, QUESTION, CONTEXT] + ([ANSWERS] if split != "test" else [])
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise UserError(f"{source} has no {', '.join(map(repr, missing))} field (fields: "
                        f"{', '.join(dataset.column_names)}); qa reads id, question, context and answers "
                        "({text: [...], answer_start: [...]}) as the Hub's squad dataset has them, or SQuAD JSON.")
    if TITLE not in dataset.column_names:
        dataset = dataset.add_column(TITLE, [""] * len(dataset))
    if ANSWERS not in dataset.column_names:
        dataset = dataset.add_column(ANSWERS, [{"text": [], "answer_start": []}] * len(dataset))
    dataset = dataset.select_columns(list(RAW_FEATURES))
    try:
        dataset = dataset.cast(RAW_FEATURES)
    except (TypeError, ValueError) as error:
        raise UserError(f"{source} does not hold id, question, context as strings and answers as {{text: [...], "
                        f"answer_start: [...]}} ({str(error).splitlines()[0][:120]}); fix the file.") from error
    ids = dataset[ID]
    if len(set(ids)) < len(ids):
        seen: set[str] = set()
        duplicate = next(qid for qid in ids if qid in seen or seen.add(qid))
        raise UserError(f"{source} has question id {duplicate!r} more than once; give every question its own id.")
    return dataset


def check_answerable(dataset: datasets.Dataset, source: str) -> None:
    """Without --version_2_with_negative every question must have an answer."""
    missing = [qid for qid, answers in zip(dataset[ID], dataset[ANSWERS]) if not answers["text"]]
    if missing:
        raise UserError(f"{source} has {len(missing)} question(s) without an answer (first: id {missing[0]!r}), as "
                        "SQuAD v2.0 data does; pass --version_2_with_negative to train and score them as unanswerable, "
                        "or give every question an answer.")


def check_answer_starts(dataset: datasets.Dataset, source: str, skip: bool) -> datasets.Dataset:
    """The training questions whose first answer (the one trained on) is at answer_start in the context; others are
    an error, or dropped (and counted) with --skip_bad_answers."""
    bad = [index for index, (context, answers) in enumerate(zip(dataset[CONTEXT], dataset[ANSWERS]))
           if answers["text"] and not _answer_is_at_start(context, answers)]
    if not bad:
        return dataset
    first = dataset[bad[0]]
    if not skip:
        text, start = first[ANSWERS]["text"][0], (first[ANSWERS]["answer_start"] or [None])[0]
        raise UserError(f"{source} has {len(bad)} answer(s) that are not at their answer_start in the context "
                        f"(first: question id {first[ID]!r}, {text[:40]!r} at {start}); fix answer_start, or pass "
                        "--skip_bad_answers to drop those questions.")
    logger.warning("%s: dropped %d of %d questions whose answer is not at its answer_start (first: id %r).", source,
                   len(bad), len(dataset), first[ID])
    bad_set = set(bad)
    return dataset.select([index for index in range(len(dataset)) if index not in bad_set])


def _answer_is_at_start(context: str, answers: dict[str, list]) -> bool:
    if len(answers["answer_start"]) != len(answers["text"]):
        return False
    start, text = answers["answer_start"][0], answers["text"][0]
    return start >= 0 and context[start:start + len(text)] == text


def read_question_lines(path: str) -> list[dict[str, str]]:
    """The {question, context} JSON objects of a JSON Lines file (blank lines skipped)."""
    if not os.path.isfile(path):
        raise UserError(f"--file {path} does not exist; pass a JSON Lines file with one {{\"question\": ..., "
                        "\"context\": ...}} object a line.")
    inputs = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path} line {number} is not JSON ({error.msg}); write one {{\"question\": ..., "
                                "\"context\": ...}} object a line.") from error
            if not isinstance(item, dict) or not all(isinstance(item.get(key), str) and item[key].strip()
                                                     for key in (QUESTION, CONTEXT)):
                raise UserError(f"{path} line {number} needs non-blank \"question\" and \"context\" strings.")
            inputs.append({QUESTION: item[QUESTION], CONTEXT: item[CONTEXT]})
    return inputs

"""Extractive question answering on small SQuAD-format files whose answer is always the word after the cue 'king'."""
from __future__ import annotations

import json
import random
from pathlib import Path

from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig

QUESTION = "who is the king ?"
CUE = "king"
NOUNS = "cat dog man woman boy girl car bus train book pen tree house star moon".split()
FILLER = "the sun was very red and blue sea sky day night it this that of to in with for on as at by".split()


def cue_rows(count: int, seed: int, length: int = 12, long_every: int = 0, prefix: str = "q") -> list[dict]:
    """Flat rows (id, title, context, question, answers) whose answer is the noun after CUE in a filler context;
    every `long_every`-th context is 100 words long (several windows at max_seq_length 64)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        size = 100 if long_every and i % long_every == 0 else length
        words = [rng.choice(FILLER) for _ in range(size)]
        answer, at = rng.choice(NOUNS), rng.randrange(size)
        before = " ".join(words[:at])
        context = " ".join([*words[:at], CUE, answer, *words[at:]])
        start = len(before) + (1 if before else 0) + len(CUE) + 1
        rows.append({"id": f"{prefix}{seed}-{i}", "title": f"article {i % 3}", "context": context,
                     "question": QUESTION, "answers": {"text": [answer], "answer_start": [start]}})
    return rows


def squad_json(rows: list[dict]) -> dict:
    """SQuAD JSON: one article per title, one paragraph per row; rows without answers become is_impossible."""
    articles: dict[str, list] = {}
    for row in rows:
        answers = [{"text": text, "answer_start": start}
                   for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"])]
        qa = {"id": row["id"], "question": row["question"], "answers": answers}
        if not answers:
            qa["is_impossible"] = True
        articles.setdefault(row["title"], []).append({"context": row["context"], "qas": [qa]})
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}
                                       for title, paragraphs in articles.items()]}


def write_squad(path: Path, rows: list[dict]) -> str:
    path.write_text(json.dumps(squad_json(rows)))
    return str(path)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def qa_case(models: TinyModels, tmp_path: Path) -> Case:
    train = write_squad(tmp_path / "train.json", cue_rows(24, 0, long_every=6))
    valid = write_squad(tmp_path / "valid.json", cue_rows(8, 1, long_every=4))
    test = write_jsonl(tmp_path / "test.jsonl", cue_rows(4, 2, long_every=2))
    config = TrainConfig(task="qa", model_name_or_path=str(models.bert), train_file=train, validation_file=valid,
                         test_file=test, do_predict=True, max_seq_length=64, doc_stride=16)
    return Case(config, ["--question", QUESTION, "--context", "the sun was red and the king cat sat on the mat"])


CASES = {"qa": qa_case}

"""Chat fine-tuning on small JSON Lines files of conversations."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import sentiment_rows
from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig

QUESTION = "is the review positive or negative?"


def write_conversations(path: Path, count: int, seed: int, system: bool = False) -> str:
    """Sentiment questions as `messages` conversations (with a system turn when asked), one per line."""
    with open(path, "w", encoding="utf-8") as file:
        for sentence, label in sentiment_rows(count, seed):
            turns = [{"role": "system", "content": "answer with one word"}] if system else []
            turns += [{"role": "user", "content": f"{QUESTION} {sentence}"}, {"role": "assistant", "content": label}]
            file.write(json.dumps({"messages": turns}) + "\n")
    return str(path)


def chat_case(models: TinyModels, tmp_path: Path) -> Case:
    train = write_conversations(tmp_path / "train.jsonl", 32, 0, system=True)
    valid = write_conversations(tmp_path / "valid.jsonl", 16, 1)
    config = TrainConfig(task="chat", model_name_or_path=str(models.gpt2), train_file=train, validation_file=valid,
                         max_seq_length=64)
    return Case(config, ["--task", "chat", f"{QUESTION} the film was very good", "--max_new_tokens", "3"])


CASES = {"chat": chat_case}

"""Masked and causal language modelling on small text files."""
from __future__ import annotations

from pathlib import Path

from conftest import sentiment_rows
from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig


def _text_files(tmp_path: Path) -> tuple[str, str]:
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n".join(sentence for sentence, _ in sentiment_rows(64, 0)) + "\n")
    valid.write_text("\n".join(sentence for sentence, _ in sentiment_rows(16, 1)) + "\n")
    return str(train), str(valid)


def mlm_case(models: TinyModels, tmp_path: Path) -> Case:
    train, valid = _text_files(tmp_path)
    config = TrainConfig(task="mlm", model_name_or_path=str(models.bert), train_file=train, validation_file=valid,
                         block_size=16)
    return Case(config, ["the film was very [MASK]"])


def clm_case(models: TinyModels, tmp_path: Path) -> Case:
    train, valid = _text_files(tmp_path)
    config = TrainConfig(task="clm", model_name_or_path=str(models.gpt2), train_file=train, validation_file=valid,
                         block_size=16)
    return Case(config, ["the film was", "--max_new_tokens", "3"])


CASES = {"mlm": mlm_case, "clm": clm_case}

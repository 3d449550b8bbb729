"""Your own labelled CSV files."""
from __future__ import annotations

from pathlib import Path

from conftest import write_sentiment_files
from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig


def text_classification_case(models: TinyModels, tmp_path: Path) -> Case:
    paths = write_sentiment_files(tmp_path, {"train": 32, "valid": 16, "test": 8})
    config = TrainConfig(task="text-classification", model_name_or_path=str(models.bert), train_file=paths["train"],
                         validation_file=paths["valid"], test_file=paths["test"], do_predict=True)
    return Case(config, ["the film was very good"])


CASES = {"text-classification": text_classification_case}

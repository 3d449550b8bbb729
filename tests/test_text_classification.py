"""Your own labelled files: formats, string and integer labels, pairs, regression, label maps in the saved config."""
from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from transformers import TFAutoModelForSequenceClassification

from conftest import sentiment_rows
from tf_finetune.config import TrainConfig
from tf_finetune.tasks import get_task
from tf_finetune.training import train

STARS = ["terrible", "poor", "okay", "good", "superb"]
STAR_WORDS = ["awful", "bad", "fine", "good", "superb"]


def five_class_rows(count: int) -> list[dict]:
    """Yelp-style reviews with string labels that follow from one word."""
    return [{"review": f"the movie was {STAR_WORDS[i % 5]}", "rating": STARS[i % 5]} for i in range(count)]


def write_csv(path, rows: list[dict]) -> str:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def config_for(tiny_bert, tmp_path, **overrides) -> TrainConfig:
    values = dict(task="text-classification", model_name_or_path=str(tiny_bert), output_dir=str(tmp_path / "out"),
                  num_train_epochs=1, per_device_train_batch_size=8, verbose=0)
    return TrainConfig(**{**values, **overrides})


def test_five_class_csv_with_string_labels_saves_label_names(tiny_bert, tmp_path):
    train_file = write_csv(tmp_path / "train.csv", five_class_rows(40))
    valid_file = write_csv(tmp_path / "valid.csv", five_class_rows(10))
    config = config_for(tiny_bert, tmp_path, train_file=train_file, validation_file=valid_file,
                        text_column=["review"], label_column="rating", learning_rate=5e-3, num_train_epochs=4)
    results = train(config)
    assert {"eval_accuracy", "eval_f1", "eval_loss"} <= set(results)
    model = TFAutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert sorted(model.config.id2label.values()) == sorted(STARS)
    assert model.config.label2id == {name: i for i, name in model.config.id2label.items()}


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_reads_tsv_jsonl_and_parquet(tmp_path, suffix):
    frame = pd.DataFrame(five_class_rows(10))
    path = tmp_path / f"data{suffix}"
    if suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    config = TrainConfig(task="text-classification", train_file=str(path), validation_file=str(path),
                         text_column=["review"], label_column="rating")
    raw = get_task("text-classification").load_raw_datasets(config)
    assert len(raw["train"]) == 10 and raw["train"].features["label"].names == sorted(STARS)


def test_integer_star_labels_become_named_classes(tmp_path):
    rows = [{"text": f"the film was {STAR_WORDS[i % 5]}", "stars": i % 5 + 1} for i in range(20)]
    path = write_csv(tmp_path / "stars.csv", rows)
    config = TrainConfig(task="text-classification", train_file=path, validation_file=path, label_column="stars")
    raw = get_task("text-classification").load_raw_datasets(config)
    assert raw["train"].features["label"].names == ["1", "2", "3", "4", "5"]
    assert raw["train"][0]["label"] == 0 and raw["train"][4]["label"] == 4


def test_sentence_pairs_and_regression(tiny_bert, tmp_path):
    rows = [{"premise": s, "hypothesis": s.replace("very", "not"), "score": float(i % 5)}
            for i, (s, _) in enumerate(sentiment_rows(24))]
    path = write_csv(tmp_path / "pairs.csv", rows)
    config = config_for(tiny_bert, tmp_path, train_file=path, validation_file=path,
                        text_column=["premise", "hypothesis"], label_column="score")
    results = train(config)
    assert {"eval_pearsonr", "eval_spearmanr"} <= set(results)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["problem_type"] == "regression"


def test_predictions_file_uses_label_names(tiny_bert, tmp_path):
    train_file = write_csv(tmp_path / "train.csv", five_class_rows(20))
    test_rows = [{"review": row["review"]} for row in five_class_rows(7)]
    test_file = write_csv(tmp_path / "test.csv", test_rows)
    config = config_for(tiny_bert, tmp_path, train_file=train_file, validation_file=train_file, test_file=test_file,
                        text_column=["review"], label_column="rating", do_predict=True)
    train(config)
    lines = (tmp_path / "out" / "predict_results_text-classification.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 8
    assert all(line.split("\t")[1] in STARS for line in lines[1:])


def test_metric_flag_takes_another_evaluate_metric(tiny_bert, tmp_path):
    path = write_csv(tmp_path / "train.csv", five_class_rows(20))
    config = config_for(tiny_bert, tmp_path, train_file=path, validation_file=path, text_column=["review"],
                        label_column="rating", metric="matthews_correlation")
    results = train(config)
    assert "eval_matthews_correlation" in results and "eval_accuracy" not in results

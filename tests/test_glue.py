"""GLUE tasks: reading the original distribution layout, labels, validation splits and official metric keys."""
from __future__ import annotations

import json

import pytest

from glue_layout import write_glue_layout
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.tasks import get_task, list_tasks
from tf_finetune.tasks.glue import GLUE_TASKS
from tf_finetune.training import train

OFFICIAL_KEYS = {
    "cola": {"eval_matthews_correlation"}, "mrpc": {"eval_accuracy", "eval_f1"}, "qqp": {"eval_accuracy", "eval_f1"},
    "stsb": {"eval_pearson", "eval_spearmanr"}, "sst2": {"eval_accuracy"}, "mnli": {"eval_accuracy"},
    "mnli-mm": {"eval_accuracy"}, "qnli": {"eval_accuracy"}, "rte": {"eval_accuracy"}, "wnli": {"eval_accuracy"},
}


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    return write_glue_layout(tmp_path_factory.mktemp("glue"))


def test_all_ten_glue_tasks_are_registered():
    assert set(OFFICIAL_KEYS) == set(GLUE_TASKS) and set(GLUE_TASKS) <= set(list_tasks())


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_reads_each_task_from_the_distribution_layout(glue_dir, name):
    task = get_task(name)
    raw = task.load_raw_datasets(TrainConfig(task=name, data_dir=str(glue_dir), do_predict=True))
    assert [len(raw[split]) for split in ("train", "validation", "test")] == [24, 24, 24]
    assert set(raw["train"].column_names) == {*task.spec.text_columns, "label"}
    assert "label" not in raw["test"].column_names
    first = raw["train"][0]
    assert all(isinstance(first[column], str) and first[column] for column in task.spec.text_columns)
    if name == "stsb":
        assert raw["train"].features["label"].dtype == "float32"
    else:
        assert raw["validation"].features["label"].names == list(task.spec.label_names)


def test_quotes_inside_sentences_are_kept(glue_dir):
    raw = get_task("mrpc").load_raw_datasets(TrainConfig(task="mrpc", data_dir=str(glue_dir)))
    assert raw["train"][0]["sentence2"].startswith('" ')


def test_mnli_mm_evaluates_on_the_mismatched_file(glue_dir):
    matched = get_task("mnli").load_raw_datasets(TrainConfig(task="mnli", data_dir=str(glue_dir)))
    mismatched = get_task("mnli-mm").load_raw_datasets(TrainConfig(task="mnli-mm", data_dir=str(glue_dir)))
    assert matched["validation"]["label"] != mismatched["validation"]["label"]
    assert mismatched["validation"]["label"][1] == 2  # odd rows of dev_mismatched.tsv are contradictions


def test_missing_task_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="has no SST-2/ folder"):
        get_task("sst2").load_raw_datasets(TrainConfig(task="sst2", data_dir=str(tmp_path)))


@pytest.mark.parametrize("name", ["cola", "stsb", "mnli-mm", "mrpc"])
def test_training_reports_the_official_metric(glue_dir, tiny_bert, tmp_path, name):
    config = TrainConfig(task=name, model_name_or_path=str(tiny_bert), data_dir=str(glue_dir), num_train_epochs=1,
                         per_device_train_batch_size=8, output_dir=str(tmp_path / "out"), verbose=0)
    results = train(config)
    assert OFFICIAL_KEYS[name] <= set(results)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    if name == "stsb":
        assert saved["problem_type"] == "regression" and len(saved["id2label"]) == 1
    else:
        assert list(saved["id2label"].values()) == list(GLUE_TASKS[name].label_names)


def test_shared_glue_tasks_run_with_their_metrics(shared_data, tiny_bert, tmp_path):
    """Every GLUE task the shared copy holds trains briefly and reports its official keys (QNLI has only dev)."""
    glue = shared_data / "glue"
    for name in ("cola", "sst2", "mrpc", "stsb", "rte", "wnli", "qnli"):
        files = {"train_file": str(glue / "QNLI" / "dev.tsv")} if name == "qnli" else {}
        config = TrainConfig(task=name, model_name_or_path=str(tiny_bert), data_dir=str(glue), num_train_epochs=1,
                             max_train_samples=64, max_eval_samples=64, per_device_train_batch_size=16,
                             output_dir=str(tmp_path / name), verbose=0, **files)
        assert OFFICIAL_KEYS[name] <= set(train(config)), name

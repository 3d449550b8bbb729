"""Bad input: one line naming the problem and the fix, exit code 2, no traceback, nothing trained or written."""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import sentiment_rows, write_csv
from tf_finetune.train import main


@pytest.fixture()
def files(tmp_path):
    """Valid train/validation CSVs plus a few broken ones."""
    def write(name: str, rows: list[tuple], header=("text", "label")) -> str:
        return write_csv(tmp_path / name, rows, header)

    return {
        "train": write("train.csv", sentiment_rows(16)),
        "valid": write("valid.csv", sentiment_rows(8, seed=1)),
        "unseen": write("unseen.csv", [("the film was fine", "neutral")]),
        "empty": write("empty.csv", []),
        "no_label": write("no_label.csv", [(s,) for s, _ in sentiment_rows(4)], header=("text",)),
        "dir": str(tmp_path),
        "null_label": _write_jsonl(tmp_path / "null.jsonl", [{"text": "the film was good", "label": None}]),
        "empty_jsonl": _write_jsonl(tmp_path / "empty.jsonl", []),
        "no_tokenizer": _model_without_tokenizer(tmp_path / "no-tokenizer"),
    }


def _write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _model_without_tokenizer(directory) -> str:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 100}))
    return str(directory)


def run(capsys, tmp_path, *args: str) -> tuple[int, str]:
    code = main(["--output_dir", str(tmp_path / "out"), "--num_train_epochs", "1", *args])
    return code, capsys.readouterr().err.strip()


CASES = {
    "unknown task": (["--task", "sst-2"], "unknown task 'sst-2'; did you mean 'sst2'?"),
    "missing model path": (["--model_name_or_path", "./no/such/model"], "does not exist"),
    "directory that is not a model": (["--model_name_or_path", "{dir}"], "not a model (no config.json)"),
    "missing data file": (["--train_file", "{dir}/nope.csv"], "does not exist"),
    "data file of unknown type": (["--train_file", "{dir}"], "unsupported extension"),
    "missing text column": (["--text_column", "review"], "no column 'review'"),
    "missing label column": (["--label_column", "stars"], "no column 'stars'"),
    "label unseen in training": (["--validation_file", "{unseen}"], "label(s) neutral"),
    "empty split": (["--validation_file", "{empty}"], "holds no examples"),
    "empty JSON Lines split": (["--validation_file", "{empty_jsonl}"], "empty.jsonl holds no examples"),
    "validation without labels": (["--validation_file", "{no_label}"], "no column 'label'"),
    "max_seq_length beyond the model": (["--max_seq_length", "4096"], "--max_seq_length 4096 is more than"),
    "zero batch size": (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be a positive number"),
    "negative epochs": (["--num_train_epochs", "-1"], "--num_train_epochs must be a positive number"),
    "zero learning rate": (["--learning_rate", "0"], "--learning_rate must be positive"),
    "unknown metric_for_best_model": (["--metric_for_best_model", "acc"], "'eval_acc' is not among the validation"),
    "do_predict without a test split": (["--do_predict", "true"], "--do_predict needs a test split"),
    "examples without a label": (["--validation_file", "{null_label}"], "examples without a label"),
    "model directory without tokenizer": (["--model_name_or_path", "{no_tokenizer}"], "cannot load a tokenizer"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_fast_with_one_line(case, files, tiny_bert, tmp_path, capsys):
    overrides, expected = CASES[case]
    overrides = [value.format(**files) for value in overrides]
    base = {"--task": "text-classification", "--model_name_or_path": str(tiny_bert),
            "--train_file": files["train"], "--validation_file": files["valid"]}
    for flag, value in zip(overrides[::2], overrides[1::2]):
        base[flag] = value
    args = [item for pair in base.items() for item in pair]
    code, err = run(capsys, tmp_path, *args)
    assert code == 2
    assert err.startswith("error: ") and expected in err and "\n" not in err, err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_unreachable_hub_model_says_how_to_fix(capsys, tmp_path, files):
    code, err = run(capsys, tmp_path, "--task", "text-classification", "--model_name_or_path",
                    "someone/not-cached-model", "--train_file", files["train"], "--validation_file", files["valid"])
    assert code == 2 and "cannot be reached" in err and "local checkpoint directory" in err


def test_finished_run_is_not_overwritten_by_accident(capsys, tmp_path, files, tiny_bert):
    args = ["--task", "text-classification", "--model_name_or_path", str(tiny_bert), "--train_file", files["train"],
            "--validation_file", files["valid"], "--verbose", "0"]
    assert run(capsys, tmp_path, *args)[0] == 0
    code, err = run(capsys, tmp_path, *args)
    assert code == 2 and "already holds a finished run" in err and "--overwrite_output_dir" in err
    assert run(capsys, tmp_path, *args, "--overwrite_output_dir")[0] == 0


@pytest.mark.parametrize("what", ["model", "dataset"])
def test_unreachable_hub_fails_in_seconds(what, capsys, tmp_path, files, tiny_bert, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    args = (["--task", "text-classification", "--model_name_or_path", "someone/not-cached-model", "--train_file",
             files["train"], "--validation_file", files["valid"]] if what == "model"
            else ["--task", "sst2", "--model_name_or_path", str(tiny_bert)])
    start = time.perf_counter()
    code, err = run(capsys, tmp_path, *args)
    assert code == 2 and "cannot be reached" in err and time.perf_counter() - start < 15


def test_overwrite_keeps_the_previous_run_when_the_new_input_is_bad(capsys, tmp_path, files, tiny_bert):
    args = ["--task", "text-classification", "--model_name_or_path", str(tiny_bert), "--train_file", files["train"],
            "--validation_file", files["valid"], "--verbose", "0"]
    assert run(capsys, tmp_path, *args)[0] == 0
    code, err = run(capsys, tmp_path, *args, "--overwrite_output_dir", "--text_column", "review")
    assert code == 2 and (tmp_path / "out" / "all_results.json").is_file()
    assert (tmp_path / "out" / "checkpoint" / "trainer_state.json").is_file()

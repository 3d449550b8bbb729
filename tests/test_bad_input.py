"""Bad input: one line naming the problem and the fix, exit code 2, no traceback, nothing trained or written."""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import build_tiny_gpt2, command_error, sentiment_rows, write_csv
from tf_finetune.train import main


@pytest.fixture(scope="module")
def broken_models(tiny_bert, tmp_path_factory) -> dict[str, str]:
    """Model folders that cannot be used: damaged weights, a tokenizer larger than the embeddings, a trained
    two-label classifier; and a checkpoint written by another model."""
    from safetensors.numpy import save_file

    from tf_finetune.runtime.checkpoints import RunState, write_checkpoint

    root = tmp_path_factory.mktemp("broken-models")
    folders = {name: root / name for name in ("truncated_h5", "truncated_safetensors", "big_tokenizer")}
    for folder in folders.values():
        shutil.copytree(tiny_bert, folder)
    weights = folders["truncated_h5"] / "tf_model.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (folders["truncated_safetensors"] / "tf_model.h5").unlink()
    save_file({"embeddings.word_embeddings.weight": np.zeros((4, 4), np.float32)},
              str(folders["truncated_safetensors"] / "model.safetensors"), metadata={"format": "pt"})
    data = (folders["truncated_safetensors"] / "model.safetensors").read_bytes()
    (folders["truncated_safetensors"] / "model.safetensors").write_bytes(data[: len(data) - 20])
    config = json.loads((folders["big_tokenizer"] / "config.json").read_text())
    (folders["big_tokenizer"] / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))

    import tf_keras
    from transformers import TFBertForSequenceClassification, TFGPT2LMHeadModel

    classifier = TFBertForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    classifier.save_pretrained(root / "two_labels")
    shutil.copy(tiny_bert / "vocab.txt", root / "two_labels")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_bert / name, root / "two_labels")
    other = TFGPT2LMHeadModel.from_pretrained(build_tiny_gpt2(root / "gpt2"))
    optimizer = tf_keras.optimizers.Adam()
    checkpoint = write_checkpoint(str(root / "other-run" / "checkpoint"),
                                  tf.train.Checkpoint(model=other, optimizer=optimizer), RunState(global_step=10))
    return {**{name: str(folder) for name, folder in folders.items()}, "two_labels": str(root / "two_labels"),
            "other_checkpoint": checkpoint}


@pytest.fixture()
def files(tmp_path, broken_models, tiny_mistral):
    """Valid train/validation CSVs plus a few broken ones."""
    def write(name: str, rows: list[tuple], header=("text", "label")) -> str:
        return write_csv(tmp_path / name, rows, header)

    def raw(name: str, content: bytes) -> str:
        (tmp_path / name).write_bytes(content)
        return str(tmp_path / name)

    good = "".join(f"{text},{label}\n" for text, label in sentiment_rows(8)).encode()
    return {
        **broken_models,
        "latin1": raw("latin1.csv", b"text,label\n" + good + b"caf\xe9 was good,positive\n"),
        "ragged": raw("ragged.csv", b"text,label\n" + good + b"the film,positive,extra\n" + good),
        "bad_jsonl": raw("bad.jsonl", b'{"text": "good film", "label": "positive"}\n'
                                      b'{"text": "bad film", "label": "negative"}\n{"text": "oops", "label": \n'),
        "blank_float": write("blank.csv", [("good film", "0.5"), ("bad film", ""), ("fine film", "1.5")]),
        "nan_label": write("nan.csv", [("good film", "0.5"), ("bad film", "nan"), ("fine film", "1.5")]),
        "inf_label": write("inf.csv", [("good film", "0.5"), ("bad film", "inf"), ("fine film", "1.5")]),
        "three_labels": write("three.csv", [(s, ("positive", "negative", "neutral")[i % 3])
                                            for i, (s, _) in enumerate(sentiment_rows(12))]),
        "unknown_key": raw("unknown.json", b'{"learnin_rate": 0.001}'),
        "wrong_type": raw("wrong.yaml", b"learning_rate: fast\n"),
        "a_file": raw("output-file", b"not a folder"),
        "train": write("train.csv", sentiment_rows(16)),
        "valid": write("valid.csv", sentiment_rows(8, seed=1)),
        "unseen": write("unseen.csv", [("the film was fine", "neutral")]),
        "empty": write("empty.csv", []),
        "no_label": write("no_label.csv", [(s,) for s, _ in sentiment_rows(4)], header=("text",)),
        "dir": str(tmp_path),
        "mistral": str(tiny_mistral),
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
    return code, command_error(capsys.readouterr().err) if code else capsys.readouterr().err.strip()


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
    "examples without a label": (["--validation_file", "{null_label}"], "the label is blank in row 1"),
    "model directory without tokenizer": (["--model_name_or_path", "{no_tokenizer}"], "cannot load a tokenizer"),
    "non-UTF-8 text": (["--train_file", "{latin1}"], "latin1.csv is not UTF-8 text"),
    "CSV with a ragged row": (["--train_file", "{ragged}"], "line 10 has 3 fields"),
    "JSON Lines with a bad line": (["--train_file", "{bad_jsonl}"], "bad.jsonl line 3 is not valid JSON"),
    "blank cell in a float label column": (["--train_file", "{blank_float}"], "label is blank in row 2"),
    "NaN label": (["--train_file", "{nan_label}"], "label is nan in row 2"),
    "infinite label": (["--train_file", "{inf_label}"], "label is inf in row 2"),
    "labels out of range for the model's num_labels": (["--model_name_or_path", "{two_labels}", "--train_file",
                                                        "{three_labels}", "--validation_file", "{three_labels}"],
                                                       "has a classification head for 2 labels"),
    "truncated tf_model.h5": (["--model_name_or_path", "{truncated_h5}"], "tf_model.h5 is damaged"),
    "truncated model.safetensors": (["--model_name_or_path", "{truncated_safetensors}"],
                                    "model.safetensors is damaged"),
    "tokenizer larger than the embeddings": (["--model_name_or_path", "{big_tokenizer}"],
                                             "tokens, more than the model's 50 embeddings"),
    "config file with an unknown key": (["--config", "{unknown_key}"], "unknown option(s) learnin_rate"),
    "config file with a wrong type": (["--config", "{wrong_type}"], "--learning-rate: invalid float value: 'fast'"),
    "checkpoint of another model": (["--resume_from_checkpoint", "{other_checkpoint}"], "does not fit this model"),
    "missing checkpoint": (["--resume_from_checkpoint", "{dir}/no-such-checkpoint"], "does not exist"),
    "output folder that is a file": (["--output_dir", "{a_file}"], "is a file, not a folder"),
    "read-only output folder": (["--output_dir", "/proc/self/tf-finetune-out"], "is not writable"),
    "zero save_steps": (["--save_steps", "0"], "--save_steps must be a positive number"),
    "unknown save_strategy": (["--save_strategy", "step"], "invalid choice: 'step'"),
    "LoRA target the model lacks": (["--lora_rank", "4", "--lora_target_modules", "q_proj"],
                                    "matches no Dense layer"),
    "LoRA flag without a rank": (["--lora_alpha", "16"], "--lora_alpha is a LoRA setting"),
    "mixed precision on TFMistral": (["--model_name_or_path", "{mistral}", "--mixed_precision", "bf16"],
                                     "fails under --mixed_precision bf16"),
    "gradient checkpointing on a model without it": (["--gradient_checkpointing", "true"],
                                                     "--gradient_checkpointing works with the llama, qwen2"),
    "gradient checkpointing with LoRA dropout": (["--gradient_checkpointing", "true", "--lora_rank", "4",
                                                  "--lora_dropout", "0.1"], "would draw new --lora_dropout masks"),
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
    assert err.startswith("error: ") and expected in err, err
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
    assert list((tmp_path / "out" / "checkpoint").glob("checkpoint-*/trainer_state.json"))

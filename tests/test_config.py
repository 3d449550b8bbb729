"""TrainConfig and the command line: flags, config files with overrides, validation, saved form without secrets."""
from __future__ import annotations

import json

import pytest

from tf_finetune.cli import parse_config
from tf_finetune.config import TrainConfig
from tf_finetune.errors import UserError


def parse(*args: str) -> TrainConfig:
    return parse_config(list(args), prog="test", description="test")


def test_flags_use_hugging_face_names_and_types():
    config = parse("--task", "mrpc", "--per_device_train_batch_size", "4", "--learning_rate", "3e-5",
                   "--text_column", "a", "b", "--do_predict", "--no_load_best_model_at_end")
    assert (config.task, config.per_device_train_batch_size, config.learning_rate) == ("mrpc", 4, 3e-5)
    assert parse("--max_grad_norm", "0").max_grad_norm == 0
    assert config.text_column == ["a", "b"] and config.do_predict and not config.load_best_model_at_end


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_with_command_line_overrides(tmp_path, suffix):
    values = {"task": "cola", "num_train_epochs": 5, "learning_rate": 1e-4}
    path = tmp_path / f"run{suffix}"
    path.write_text(json.dumps(values) if suffix == ".json" else "\n".join(f"{k}: {v}" for k, v in values.items()))
    config = parse("--config", str(path), "--num_train_epochs", "2")
    assert (config.task, config.num_train_epochs, config.learning_rate) == ("cola", 2, 1e-4)


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"taks": "cola"}))
    with pytest.raises(UserError, match="unknown option"):
        parse("--config", str(path))


@pytest.mark.parametrize("field,value", [("warmup_ratio", 1.5), ("mlm_probability", 0.0), ("block_size", 0),
                                         ("max_train_samples", 0), ("tune_train_fraction", 0.0)])
def test_validation_names_the_field(field, value):
    with pytest.raises(UserError, match=field):
        TrainConfig(**{field: value}).validate()


def test_saved_and_shown_forms_have_no_token():
    config = TrainConfig(hub_token="hf_secret")
    assert "hub_token" not in config.to_dict() and "hf_secret" not in repr(config)


@pytest.mark.parametrize("values", [{"num_train_epochs": [2]}, {"text_column": "ab"}, {"do_train": 3}])
def test_config_file_values_must_have_the_field_type(tmp_path, values):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    with pytest.raises(UserError, match=f"{next(iter(values))} must be"):
        parse("--config", str(path))


def test_list_tasks(capsys):
    assert parse("--list_tasks") is None
    assert {"sst2", "mnli-mm", "text-classification"} <= set(capsys.readouterr().out.split())


@pytest.mark.parametrize("field,value,hint", [("strategy", "gpus", "did you mean 'gpu'"),
                                              ("hub_strategy", "epochs", "did you mean 'epoch'"),
                                              ("mixed_precision", "fp8", "no, fp16, bf16"),
                                              ("verbose", 3, "0, 1, 2, got 3"),
                                              ("log_level", "loud", "debug, info, warning, error")])
def test_notebook_values_outside_the_choices_get_the_cli_error(field, value, hint):
    with pytest.raises(UserError, match=f"{field} must be one of .*{hint}"):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("value", ["/home/me/models/bert", "./bert", "not a/valid id"])
def test_a_base_model_id_must_be_a_hub_id(value):
    with pytest.raises(UserError, match="--base_model_id must be a Hub model id"):
        TrainConfig(base_model_id=value).validate()
    TrainConfig(base_model_id="sentence-transformers/all-MiniLM-L6-v2").validate()


def test_field_facts_live_on_the_fields():
    from tf_finetune.config import field_fact, fields_where

    assert not field_fact("output_dir", "changes_training") and field_fact("learning_rate", "changes_training")
    assert not field_fact("task", "tunable") and field_fact("learning_rate", "tunable")
    assert {"learning_rate", "num_train_epochs", "seed"} <= set(fields_where("card"))
    assert "hub_token" not in fields_where("card") and not field_fact("hub_token", "tunable")
    assert parse("--strategy", "cpu").strategy == "cpu"  # the facts stay out of argparse, which rejects unknown keys


def test_a_run_config_file_rebuilds_the_configuration(tmp_path):
    config = TrainConfig(task="cola", learning_rate=1e-4, text_column=["a", "b"])
    path = tmp_path / "run_config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.from_file(str(path)) == config
    assert TrainConfig.from_file(str(path), seed=7) == config.replace(seed=7)

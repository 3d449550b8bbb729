"""TrainConfig and the command line: flags, config files with overrides, validation, saved form without secrets."""
from __future__ import annotations

import json

import pytest

from tf_finetune.cli import parse_config
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError


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
    assert {"learning_rate", "num_train_epochs", "seed"} <= set(fields_where("hyperparameter"))
    assert "hub_token" not in fields_where("hyperparameter") and not field_fact("hub_token", "tunable")
    assert parse("--strategy", "cpu").strategy == "cpu"  # the facts stay out of argparse, which rejects unknown keys


def test_a_run_config_file_rebuilds_the_configuration(tmp_path):
    config = TrainConfig(task="cola", learning_rate=1e-4, text_column=["a", "b"])
    path = tmp_path / "run_config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.from_file(str(path)) == config
    assert TrainConfig.from_file(str(path), seed=7) == config.replace(seed=7)


@pytest.mark.parametrize("field,bad,good,message", [
    ("per_device_train_batch_size", 0, 1, "--per_device_train_batch_size must be a positive number, got 0."),
    ("learning_rate", 0.0, 1e-9, "--learning_rate must be positive, got 0.0."),
    ("max_train_samples", 0, None, "--max_train_samples must be a positive number, got 0."),
    ("weight_decay", -0.1, 0.0, "--weight_decay must not be negative, got -0.1."),
    ("max_grad_norm", -1.0, 0.0, "--max_grad_norm must be 0 (no clipping) or positive, got -1.0."),
    ("warmup_ratio", 1.0, 0.0, "--warmup_ratio must be in [0, 1), got 1.0."),
    ("mlm_probability", 1.0, 0.5, "--mlm_probability must be in (0, 1), got 1.0."),
    ("tune_train_fraction", 1.5, 1.0, "--tune_train_fraction must be in (0, 1], got 1.5."),
])
def test_ranges_are_field_facts_checked_at_their_bounds(field, bad, good, message):
    with pytest.raises(UserError) as error:
        TrainConfig(**{field: bad}).validate()
    assert str(error.value) == message
    TrainConfig(**{field: good}).validate()


def test_a_range_on_a_new_field_is_checked_without_more_code():
    """validate() reads the range from the field: a dataclass with one checks it the same way."""
    import dataclasses

    from tf_finetune.config import _arg
    from tf_finetune.core.fields import check_ranges

    @dataclasses.dataclass
    class Settings:
        temperature: float = _arg(1.0, "Sampling temperature.", above=0, at_most=2)

    check_ranges(Settings(2.0))
    with pytest.raises(UserError, match=r"--temperature must be in \(0, 2\], got 2.5."):
        check_ranges(Settings(2.5))


def test_each_choice_set_lives_on_its_field():
    """Modules that dispatch on a field's values cover exactly its choices (plus the values that need no entry)."""
    from tf_finetune.config import field_choices
    from tf_finetune.push import build_parser
    from tf_finetune.runtime.distribute import _BUILDERS, POLICIES
    from tf_finetune.training.trackers import PACKAGES

    assert set(field_choices("strategy")) == {"auto", *_BUILDERS}
    assert set(field_choices("mixed_precision")) == {"no", *POLICIES}
    assert set(field_choices("report_to")) == {"none", "all", *PACKAGES}
    hub_export = next(action for action in build_parser()._actions if action.dest == "hub_export")
    assert tuple(hub_export.choices) == field_choices("hub_export") == ("none", "pytorch")
    with pytest.raises(UserError, match="pooling must be one of cls, mean"):
        TrainConfig(pooling="max", features_baseline=True).validate()


@pytest.mark.parametrize("name,text,message", [
    ("missing.yaml", None, "config file {path} does not exist; pass the path of a .yaml or .json file to --config."),
    ("broken.yaml", "task: [sst2\n", "config file {path} is not valid YAML: "),
    ("broken.json", "{", "config file {path} is not valid JSON: "),
    ("list.json", "[1, 2]", "config file {path} must hold a mapping of option names to values."),
])
def test_config_files_that_cannot_be_read_fail_in_one_line(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError) as error:
        parse("--config", str(path))
    assert str(error.value).startswith(message.format(path=path)) and "\n" not in str(error.value)

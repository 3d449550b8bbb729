"""LoRA: adapters on every task, only adapters and the head train, merged and unmerged outputs, PEFT-format files
(checked against PyTorch's state-dict names, and loaded by PEFT itself where torch and peft are installed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import transformers
from safetensors.numpy import load_file

from conftest import write_sentiment_files
from task_fixtures import CASES, TinyModels
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.models.lora import LoraDense, lora_layers
from tf_finetune.predict import main as predict_main
from tf_finetune.tasks import list_tasks
from tf_finetune.training import FineTuneRun, train

LORA = {"lora_rank": 2, "lora_alpha": 8.0, "lora_dropout": 0.1}


@pytest.fixture(scope="module")
def models(tiny_bert, tiny_mistral) -> TinyModels:
    return TinyModels(bert=tiny_bert, gpt2=tiny_mistral)  # a causal LM whose Dense layers LoRA can adapt


def _inputs(batch):
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.mark.parametrize("name", list_tasks())
def test_lora_trains_only_adapters_and_head_on_every_task(name, models, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    case = CASES[name](models, tmp_path / "data")
    config = case.config.replace(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                                 per_device_eval_batch_size=8, learning_rate=1e-2, verbose=0, do_predict=False,
                                 **LORA)
    run = FineTuneRun(config)
    adapters = lora_layers(run.model)
    assert adapters and all(isinstance(layer, LoraDense) for layer in adapters)
    adapter_ids = {id(w) for layer in adapters for w in (layer.lora_A, layer.lora_B)}
    others = [w for w in run.model.trainable_weights if id(w) not in adapter_ids]
    assert len(adapter_ids) == 2 * len(adapters) <= len(run.model.trainable_weights)
    for weight in others:  # the head's weights only (a causal LM has no new head: nothing else trains)
        assert not any(part in weight.name for part in ("embeddings", "encoder", "/layers.")), weight.name
    assert run.trainable_parameters < run.total_parameters / 2

    run.compile()
    frozen = [w.numpy().copy() for w in run.model.non_trainable_weights]
    b_before = [layer.lora_B.numpy().copy() for layer in adapters]
    batch = next(iter(run.train_dataset))
    run.model.train_on_batch(*(batch if isinstance(batch, tuple) else (batch,)))
    assert all(np.array_equal(old, w.numpy()) for old, w in zip(frozen, run.model.non_trainable_weights))
    assert any(not np.array_equal(old, layer.lora_B.numpy()) for old, layer in zip(b_before, adapters))

    run.save()
    reloaded = getattr(transformers, run.task.auto_model_class).from_pretrained(config.output_dir)
    features = _inputs(next(iter(run.eval_dataset)))
    np.testing.assert_allclose(reloaded(features, training=False).to_tuple()[0],
                               run.model(features, training=False).to_tuple()[0], rtol=1e-4, atol=1e-4)
    assert lora_layers(run.model) == adapters, "saving merged a copy: the run's adapters stay in place"
    adapter_config = json.loads((Path(config.output_dir) / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 2 and adapter_config["lora_alpha"] == 8
    assert adapter_config["task_type"] == run.task.peft_task_type

    capsys.readouterr()
    assert predict_main(["--model", config.output_dir, *case.predict_args]) == 0
    assert capsys.readouterr().out.strip()


def test_unmerged_output_is_config_and_adapter_and_predicts_like_the_merged_one(tiny_bert, tmp_path, capsys):
    paths = write_sentiment_files(tmp_path, {"train": 32, "valid": 16})
    base = dict(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                validation_file=paths["valid"], num_train_epochs=1, per_device_train_batch_size=8, verbose=0,
                learning_rate=1e-2, **LORA)
    output_dir, outputs = tmp_path / "out", {}
    for merge in (True, False):  # the second run replaces the first (whose weights must not stay behind)
        results = train(TrainConfig(output_dir=str(output_dir), lora_merge=merge, overwrite_output_dir=True, **base))
        assert results["trainable_parameters"] < results["total_parameters"]
        capsys.readouterr()
        assert predict_main(["--model", str(output_dir), "the film was very good", "awful boring plot"]) == 0
        outputs[merge] = capsys.readouterr().out
        names = {path.name for path in output_dir.iterdir()}
        assert {"adapter", "config.json"} <= names and ("tf_model.h5" in names) == merge
        card = (output_dir / "README.md").read_text()
        assert "Trained with LoRA: rank 2, alpha 8" in card and "lora_rank" in card
    assert outputs[True] == outputs[False]
    from tf_finetune.models.loading import load_model, load_model_config

    reloaded = load_model("TFAutoModelForSequenceClassification", str(output_dir), load_model_config(str(output_dir)))
    assert len(reloaded.trainable_weights) == len(reloaded.weights), "a merged adapter leaves a plain, trainable model"


def test_adapter_file_uses_pytorch_names_and_shapes(tiny_bert, tmp_path):
    paths = write_sentiment_files(tmp_path, {"train": 16, "valid": 8})
    config = TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], output_dir=str(tmp_path / "out"), lora_rank=4, verbose=0)
    run = FineTuneRun(config)
    run.save()
    tensors = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    hidden = run.model_config.hidden_size
    expected = {f"base_model.model.bert.encoder.layer.0.attention.self.{name}.lora_{part}.weight":
                ((4, hidden) if part == "A" else (hidden, 4)) for name in ("query", "value") for part in "AB"}
    expected.update({"base_model.model.classifier.weight": (2, hidden), "base_model.model.classifier.bias": (2,)})
    assert {name: tensor.shape for name, tensor in tensors.items()} == expected
    torch = pytest.importorskip("torch", reason="torch (CPU) is needed to compare with PyTorch's state-dict names")
    torch_model = transformers.BertForSequenceClassification(run.model_config)
    pytorch_names = set(torch_model.state_dict())
    for name in tensors:
        module = name[len("base_model.model."):].replace(".lora_A", "").replace(".lora_B", "")
        assert module in pytorch_names, name
        assert tuple(torch_model.state_dict()[module].shape) in {tensors[name].shape, (hidden, hidden)}
    del torch


def test_peft_loads_the_adapter_and_matches_the_tf_logits(tiny_bert, tmp_path):
    torch = pytest.importorskip("torch", reason="torch (CPU) is not installed")
    peft = pytest.importorskip("peft", reason="peft is not installed")
    paths = write_sentiment_files(tmp_path, {"train": 32, "valid": 8})
    config = TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], output_dir=str(tmp_path / "out"), num_train_epochs=1,
                         per_device_train_batch_size=8, learning_rate=1e-2, verbose=0, **LORA)
    train(config)
    tf_model = transformers.TFAutoModelForSequenceClassification.from_pretrained(config.output_dir)
    from transformers.modeling_tf_pytorch_utils import load_tf2_model_in_pytorch_model

    base = transformers.BertForSequenceClassification(tf_model.config)  # the pretrained encoder, a random head
    load_tf2_model_in_pytorch_model(base, transformers.TFAutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2), allow_missing_keys=True)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "out" / "adapter")).eval()
    ids = np.array([[2, 10, 20, 30, 3]])
    with torch.no_grad():
        torch_logits = model(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(torch_logits, tf_model(tf.constant(ids)).logits.numpy(), atol=1e-4)


@pytest.mark.parametrize("changes, message", [
    ({"lora_rank": -1}, "--lora_rank must be 0"),
    ({"lora_alpha": 16.0}, "--lora_alpha is a LoRA setting, but --lora_rank is 0"),
    ({"lora_merge": False}, "--lora_merge is a LoRA setting"),
    ({"lora_rank": 4, "lora_dropout": 1.5}, "--lora_dropout must be in [0, 1)"),
    ({"lora_rank": 4, "lora_target_modules": ["all-linear", "query"]}, "--lora_target_modules all-linear stands alone"),
])
def test_bad_lora_flags_are_refused_before_loading(changes, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**changes).validate()


@pytest.mark.parametrize("changes, message", [
    ({"lora_rank": 4, "lora_target_modules": ["q_proj"]}, "matches no Dense layer of the model; its Dense layers "
                                                          "are named"),
    ({"lora_rank": 64}, "--lora_rank 64 is larger than"),
    ({"lora_rank": 4, "modules_to_save": ["score"]}, "--modules_to_save score matches no module"),
])
def test_lora_settings_that_do_not_fit_the_model_fail_before_training(changes, message, tiny_bert, tmp_path):
    paths = write_sentiment_files(tmp_path, {"train": 16, "valid": 8})
    config = TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], output_dir=str(tmp_path / "out"), **changes)
    with pytest.raises(UserError, match=message):
        FineTuneRun(config)


def _lora_config(tiny_bert, tmp_path, **changes) -> TrainConfig:
    tmp_path.mkdir(exist_ok=True)
    paths = write_sentiment_files(tmp_path, {"train": 64, "valid": 16})
    values = dict(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                  validation_file=paths["valid"], output_dir=str(tmp_path / "out"), num_train_epochs=3,
                  per_device_train_batch_size=8, learning_rate=1e-2, verbose=0, **LORA)
    return TrainConfig(**{**values, **changes})


def test_lora_run_resumed_after_a_crash_ends_like_an_uninterrupted_one(tiny_bert, tmp_path):
    import tf_keras

    class CrashAfterEpoch(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    whole = train(_lora_config(tiny_bert, tmp_path / "whole"))
    config = _lora_config(tiny_bert, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train(config, extra_callbacks=[CrashAfterEpoch()])
    resumed = train(config)
    assert resumed["eval_loss"] == pytest.approx(whole["eval_loss"], abs=1e-6)
    tensors = [load_file(str(tmp_path / run / "out" / "adapter" / "adapter_model.safetensors"))
               for run in ("whole", "resumed")]
    assert max(float(np.abs(tensors[0][name] - tensors[1][name]).max()) for name in tensors[0]) < 1e-6


def test_lora_rank_and_alpha_are_searchable(tiny_bert, tmp_path):
    from tf_finetune.tuning import tune

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lora_rank": {"type": "choice", "values": [2, 4]},
                                 "lora_alpha": {"type": "float", "min_value": 4.0, "max_value": 16.0}}))
    config = _lora_config(tiny_bert, tmp_path, tune="random", max_trials=2, tune_space=str(space),
                          tune_retrain=False, num_train_epochs=1)
    _, best = tune(config)
    assert set(best) == {"lora_rank", "lora_alpha"} and best["lora_rank"] in (2, 4)


@pytest.mark.parametrize("precision, xla", [("fp16", False), ("bf16", True)])
def test_lora_under_mixed_precision_and_xla_keeps_float32_adapters(precision, xla, tiny_bert, tmp_path):
    run = FineTuneRun(_lora_config(tiny_bert, tmp_path, mixed_precision=precision, jit_compile=xla))
    layer = lora_layers(run.model)[0]
    assert layer.lora_A.dtype == tf.float32 and layer.lora_B.dtype == tf.float32
    assert layer.compute_dtype == {"fp16": "float16", "bf16": "bfloat16"}[precision]
    run.compile()
    history = run.model.fit(run.train_dataset.take(3), verbose=0).history
    assert np.isfinite(history["loss"][0]) and float(tf.reduce_max(tf.abs(layer.lora_B))) > 0

"""Fine-tuning runs that push to a real HTTP Hub server on 127.0.0.1 (tests/hub_server.py)."""
from __future__ import annotations

import functools
import json
import logging
import time

import numpy as np
import pytest
import tf_keras
from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

from conftest import write_sentiment_files
from hub_server import TOKEN, HubServer, hub  # noqa: F401 - `hub` is a fixture
from tf_finetune import push
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.hub.client import HubUploader, Retry
from tf_finetune.training import train


@pytest.fixture()
def data_files(tmp_path):
    return write_sentiment_files(tmp_path, {"train": 32, "valid": 16})


def push_config(tiny_bert, data_files, tmp_path, **overrides) -> TrainConfig:
    values = dict(task="text-classification", model_name_or_path=str(tiny_bert), train_file=data_files["train"],
                  validation_file=data_files["valid"], output_dir=str(tmp_path / "sst-tiny"), num_train_epochs=2,
                  per_device_train_batch_size=8, verbose=0, push_to_hub=True, hub_token=TOKEN)
    return TrainConfig(**{**values, **overrides})


def test_push_at_end_uploads_a_loadable_model_with_its_card(hub: HubServer, tiny_bert, data_files, tmp_path):
    results = train(push_config(tiny_bert, data_files, tmp_path))
    files = hub.files("alice/sst-tiny")
    assert {"config.json", "tf_model.h5", "tokenizer.json", "all_results.json", "README.md"} <= set(files)
    assert not [name for name in files if name.startswith("checkpoint/")]
    assert json.loads(files["all_results.json"]) == json.loads((tmp_path / "sst-tiny" / "all_results.json").read_text())
    card = files["README.md"].decode()
    assert "model-index" in card and f"value: {results['eval_accuracy']}" in card
    assert [c.title for c in hub.commits("alice/sst-tiny")][1:] == ["End of training"]

    remote = TFAutoModelForSequenceClassification.from_pretrained("alice/sst-tiny", token=TOKEN)
    local = TFAutoModelForSequenceClassification.from_pretrained(tmp_path / "sst-tiny")
    inputs = AutoTokenizer.from_pretrained("alice/sst-tiny", token=TOKEN)(["the film was great"], return_tensors="tf")
    np.testing.assert_allclose(remote(inputs).logits.numpy(), local(inputs).logits.numpy(), rtol=1e-6)


def test_lora_push_uploads_the_adapter_and_says_lora_on_the_card(hub: HubServer, tiny_bert, data_files, tmp_path):
    train(push_config(tiny_bert, data_files, tmp_path, lora_rank=4))
    files = hub.files("alice/sst-tiny")
    assert {"tf_model.h5", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(files)
    card = files["README.md"].decode()
    assert "Trained with LoRA: rank 4, alpha 8" in card and "parameters trained (" in card


def test_epoch_strategy_makes_one_commit_per_epoch(hub: HubServer, tiny_bert, data_files, tmp_path, monkeypatch):
    class WaitingUploader(HubUploader):
        """Finishes each upload before training goes on, so no epoch's push replaces a waiting one."""

        def push(self, commit_message: str, blocking: bool = False) -> None:
            super().push(commit_message, blocking=True)

    monkeypatch.setattr("tf_finetune.training.pipeline.HubUploader", WaitingUploader)
    train(push_config(tiny_bert, data_files, tmp_path, hub_strategy="epoch"))
    titles = [c.title for c in hub.commits("alice/sst-tiny")][1:]
    assert titles == ["Training in progress, epoch 1", "Training in progress, epoch 2", "End of training"]


def test_hub_going_away_never_loses_the_run(hub: HubServer, tiny_bert, data_files, tmp_path, monkeypatch):
    monkeypatch.setattr("tf_finetune.training.pipeline.HubUploader", functools.partial(HubUploader, retry=Retry(2, 0.01, 0.02)))

    class KillHub(tf_keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                hub.stop()

    config = push_config(tiny_bert, data_files, tmp_path, num_train_epochs=3)
    results = train(config, extra_callbacks=[KillHub()])
    out = tmp_path / "sst-tiny"
    assert results["epoch"] == 3 and {"all_results.json", "tf_model.h5", "config.json"} <= {p.name for p in out.iterdir()}
    hub.start()
    assert "tf_model.h5" not in hub.files("alice/sst-tiny")
    assert push.main([str(out), "--hub_model_id", "alice/sst-tiny", "--hub_token", TOKEN]) == 0
    assert {"tf_model.h5", "README.md", "all_results.json"} <= set(hub.files("alice/sst-tiny"))


def test_wrong_token_fails_before_training(hub: HubServer, tiny_bert, data_files, tmp_path):
    start = time.perf_counter()
    with pytest.raises(UserError) as error:
        train(push_config(tiny_bert, data_files, tmp_path, hub_token="hf_wrong"))
    assert time.perf_counter() - start < 10 and "hf_wrong" not in str(error.value)
    assert not (tmp_path / "sst-tiny" / "tf_model.h5").exists()


def test_token_never_written_or_logged(hub: HubServer, tiny_bert, data_files, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    train(push_config(tiny_bert, data_files, tmp_path, hub_strategy="epoch", verbose=1))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert not [name for name, data in hub.files("alice/sst-tiny").items() if TOKEN.encode() in data]
    captured = capfd.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err


def test_trains_from_a_hub_model_id_through_hf_endpoint(hub: HubServer, tiny_bert, data_files, tmp_path):
    train(push_config(tiny_bert, data_files, tmp_path, num_train_epochs=1))
    config = push_config("alice/sst-tiny", data_files, tmp_path, push_to_hub=False, num_train_epochs=1,
                         output_dir=str(tmp_path / "from-hub"))
    assert "eval_accuracy" in train(config)


def test_wrong_token_fails_before_a_search(hub: HubServer, tiny_bert, data_files, tmp_path):
    from tf_finetune.tuning import tune

    with pytest.raises(UserError, match="token"):
        tune(push_config(tiny_bert, data_files, tmp_path, hub_token="hf_wrong", tune="random", max_trials=2))
    assert not (tmp_path / "sst-tiny" / "tuning").exists()

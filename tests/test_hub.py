"""tf_finetune.hub.client, the model card and `python -m tf_finetune.push` against the test hub (no TensorFlow needed)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from conftest import command_error
from hub_server import TOKEN, HubServer, hub, hub_environment  # noqa: F401 - hub is a fixture
from tf_finetune import push
from tf_finetune.core.errors import UserError
from tf_finetune.hub.client import HubUploader, Retry, check_push_access, push_command, resolve_token
from tf_finetune.outputs.model_card import write_model_card, write_model_card_for_run

FAST = Retry(attempts=3, initial_delay=0.01, max_delay=0.02)
RESULTS = {"eval_accuracy": 0.875, "eval_loss": 0.31, "eval_runtime": 1.5, "train_loss": 0.42, "epoch": 3.0}
RUN_CONFIG = {"task": "sst2", "model_name_or_path": "google-bert/bert-base-uncased", "dataset_name": None,
              "learning_rate": 2e-05, "per_device_train_batch_size": 16, "num_train_epochs": 3}


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """A finished run's folder, with the state that must not be uploaded next to the model."""
    root = tmp_path / "sst2-run"
    for name, content in {
        "config.json": '{"model_type": "bert", "hidden_size": 8}',
        "tf_model.h5": "weights",
        "all_results.json": json.dumps(RESULTS),
        "run_config.json": json.dumps(RUN_CONFIG),
        "checkpoint/ckpt-1.index": "resumable state",
        "tuning/trial_0/trial.json": "{}",
        ".tmpabc.json": "half written",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def uploaded(hub: HubServer, repo_id: str) -> list[str]:
    return sorted(name for name in hub.files(repo_id) if name != ".gitattributes")


def test_resolve_token_prefers_explicit_then_environment_then_login(hub: HubServer, monkeypatch) -> None:
    assert resolve_token(None) is None
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True)
    Path(constants.HF_TOKEN_PATH).write_text("hf_saved")
    assert resolve_token(None) == "hf_saved"
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert resolve_token(None) == "hf_env"
    assert resolve_token("hf_explicit") == "hf_explicit"


def test_check_push_access_creates_the_default_repo(hub: HubServer, output_dir: Path) -> None:
    assert check_push_access(None, str(output_dir), TOKEN, private=True) == "alice/sst2-run"
    assert [c.title for c in hub.commits("alice/sst2-run")] == ["initial commit"]
    assert check_push_access("alice/sst2-run", str(output_dir), TOKEN, private=True) == "alice/sst2-run"


@pytest.mark.parametrize("repo_id, token, message", [
    (None, None, "needs a token"),
    (None, "hf_wrong_secret", "rejected the token"),
    ("bob/model", TOKEN, "cannot write to bob/model"),
    (None, "hf_read_token", "read-only"),
    ("alice/not a name", TOKEN, "not a valid Hub repository id"),
])
def test_check_push_access_fails_in_one_line(hub: HubServer, output_dir: Path, repo_id, token, message) -> None:
    with pytest.raises(UserError, match=message) as error:
        check_push_access(repo_id, str(output_dir), token, private=False)
    assert "\n" not in str(error.value) and "secret" not in str(error.value)


def test_check_push_access_reports_an_unreachable_hub(hub: HubServer, output_dir: Path) -> None:
    hub.stop()
    with pytest.raises(UserError, match=f"cannot reach the Hub at {hub.url}"):
        check_push_access(None, str(output_dir), TOKEN, private=False)


def test_uploader_pushes_in_the_background_without_training_state(hub: HubServer, output_dir: Path) -> None:
    repo_id = check_push_access(None, str(output_dir), TOKEN, private=False)
    uploader = HubUploader(str(output_dir), repo_id, TOKEN, retry=FAST)
    uploader.push("epoch 1")
    assert uploader.wait(timeout=30)
    assert uploaded(hub, repo_id) == ["all_results.json", "config.json", "run_config.json", "tf_model.h5"]
    (output_dir / "tf_model.h5").write_text("better weights")
    uploader.push("end of training", blocking=True)
    assert not uploader.failed and uploader.last_commit == hub.commits(repo_id)[-1].oid
    assert [c.title for c in hub.commits(repo_id)] == ["initial commit", "epoch 1", "end of training"]


def test_uploader_retries_server_errors(hub: HubServer, output_dir: Path) -> None:
    repo_id = check_push_access(None, str(output_dir), TOKEN, private=False)
    hub.fail_next(2, status=503)
    uploader = HubUploader(str(output_dir), repo_id, TOKEN, retry=FAST)
    uploader.push("epoch 1")
    assert uploader.wait(timeout=30)
    assert "config.json" in uploaded(hub, repo_id)


def test_a_newer_push_replaces_a_waiting_one_while_the_hub_is_away(hub: HubServer, output_dir: Path,
                                                                   caplog) -> None:
    caplog.set_level(logging.INFO, logger="tf_finetune.hub.client")
    repo_id = check_push_access(None, str(output_dir), TOKEN, private=False)
    hub.stop()
    uploader = HubUploader(str(output_dir), repo_id, TOKEN, retry=Retry(attempts=100, initial_delay=0.05,
                                                                           max_delay=0.05))
    uploader.push("epoch 1")
    deadline = time.monotonic() + 30
    while "retrying in" not in caplog.text and time.monotonic() < deadline:  # epoch 1 is being uploaded
        time.sleep(0.01)
    uploader.push("epoch 2")
    (output_dir / "tf_model.h5").write_text("epoch 3 weights")
    uploader.push("epoch 3")
    assert not uploader.wait(timeout=0.2)  # still retrying
    hub.start()
    assert uploader.wait(timeout=30)
    titles = [c.title for c in hub.commits(repo_id)]
    assert titles[:2] == ["initial commit", "epoch 1"] and "epoch 2" not in titles
    assert hub.files(repo_id)["tf_model.h5"] == b"epoch 3 weights"
    assert "replaces the waiting upload 'epoch 2'" in caplog.text


def test_a_final_failure_is_logged_with_the_command_to_upload_later(hub: HubServer, output_dir: Path,
                                                                     caplog) -> None:
    repo_id = check_push_access(None, str(output_dir), TOKEN, private=False)
    hub.stop()
    uploader = HubUploader(str(output_dir), repo_id, TOKEN, retry=FAST)
    uploader.push("end of training", blocking=True)
    assert uploader.failed and not uploader.wait(timeout=1)
    assert uploader.last_error == f"no connection to 127.0.0.1:{hub.port}"
    command = f"python -m tf_finetune.push {output_dir} --hub_model_id alice/sst2-run"
    assert command == push_command(str(output_dir), repo_id)
    assert f"Upload it later with: {command}" in caplog.text
    assert caplog.text.count("retrying in") == FAST.attempts - 1


def test_an_upload_without_write_access_is_not_retried(hub: HubServer, output_dir: Path, caplog) -> None:
    repo_id = check_push_access(None, str(output_dir), TOKEN, private=False)
    uploader = HubUploader(str(output_dir), repo_id, "hf_bob_token", retry=FAST)
    uploader.push("epoch 1", blocking=True)
    assert uploader.failed and "403" in uploader.last_error
    assert "retrying in" not in caplog.text


def test_model_card_metadata_and_sections(tmp_path: Path) -> None:
    path = write_model_card(str(tmp_path), repo_id="alice/sst2-run", base_model="google-bert/bert-base-uncased",
                            task_name="sst2", task_type="text-classification", dataset_name="nyu-mll/glue",
                            dataset_config="sst2", license="apache-2.0", metrics=RESULTS,
                            hyperparameters={**RUN_CONFIG, "hub_token": TOKEN})
    card = ModelCard.load(path)
    assert card.data.base_model == "google-bert/bert-base-uncased" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["nyu-mll/glue"] and "tf-finetune" in card.data.tags
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {("accuracy", 0.875), ("loss", 0.31)}
    assert {(r.task_type, r.dataset_config) for r in card.data.eval_results} == {("text-classification", "sst2")}
    for section in ("## Model description", "## Intended use", "## Training hyperparameters", "## Results",
                    "## Framework versions", "| learning_rate | 2e-05 |", "| eval_accuracy | 0.875 |",
                    "- transformers "):
        assert section in card.text
    assert "hub_token" not in card.content and TOKEN not in card.content
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


def write_run(folder: Path, **run_config) -> Path:
    """A finished run's files that its model card is written from (the main metric, eval_accuracy, listed last)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_config.json").write_text(json.dumps(run_config))
    (folder / "all_results.json").write_text(json.dumps({"eval_loss": 0.31, "eval_f1": 0.5, "eval_accuracy": 0.875}))
    (folder / "run_info.json").write_text(json.dumps({"monitor": "eval_accuracy"}))
    return folder


def local_checkpoint(folder: Path, card: str = "", name_or_path: str = "") -> str:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "_name_or_path": name_or_path}))
    if card:
        (folder / "README.md").write_text(card)
    return str(folder)


@pytest.mark.parametrize("card, name_or_path, base_model_id, expected", [
    ("# all-MiniLM-L6-v2\n\nmodel = AutoModel.from_pretrained('sentence-transformers/all-MiniLM-L6-v2')\n"
     "base = AutoModel.from_pretrained('nreimers/MiniLM-L6-H384-uncased')\n", "nreimers/MiniLM-L6-H384-uncased",
     None, "sentence-transformers/all-MiniLM-L6-v2"),  # the PyPI MiniLM: its card names it, its config its base
    ("", "google-bert/bert-base-uncased", None, "google-bert/bert-base-uncased"),
    ("", "/home/me/models/bert", None, None),
    ("", "", "alice/my-bert", "alice/my-bert"),
])
def test_a_card_never_shows_a_local_path(tmp_path, card, name_or_path, base_model_id, expected):
    checkpoint = local_checkpoint(tmp_path / "models" / "all-MiniLM-L6-v2", card, name_or_path)
    run = write_run(tmp_path / "run", task="text-classification", model_name_or_path=checkpoint,
                    base_model_id=base_model_id)
    card = ModelCard.load(write_model_card_for_run(str(run), "alice/run"))
    assert card.data.base_model == expected
    assert str(tmp_path) not in card.content and "/home/me" not in card.content
    assert (f"fine-tuned version of [{expected}](https://huggingface.co/{expected})" if expected else
            "fine-tuned version of a local checkpoint") in card.text


def test_a_glue_card_names_the_hub_dataset_lists_what_applies_and_leads_with_the_main_metric(tmp_path):
    run = write_run(tmp_path / "run", task="sst2", data_dir="/data/glue",
                    model_name_or_path="google-bert/bert-base-uncased", max_seq_length=128, learning_rate=2e-5, block_size=128, mlm_probability=0.15, doc_stride=128,
                    packing=False, lora_rank=0, lora_alpha=None)
    card = ModelCard.load(write_model_card_for_run(str(run), "alice/run"))
    assert card.data.datasets == ["nyu-mll/glue"] and card.data.pipeline_tag == "text-classification"
    assert {(r.dataset_type, r.dataset_config) for r in card.data.eval_results} == {("nyu-mll/glue", "sst2")}
    assert [r.metric_type for r in card.data.eval_results] == ["accuracy", "loss", "f1"]
    assert "| max_seq_length | 128 |" in card.text and "| learning_rate | 2e-05 |" in card.text
    for other_tasks in ("block_size", "mlm_probability", "doc_stride", "packing", "lora_"):
        assert other_tasks not in card.text
    lora = write_run(tmp_path / "lora", task="mlm", model_name_or_path="google-bert/bert-base-uncased",
                     max_seq_length=128, block_size=64, mlm_probability=0.2, lora_rank=8, lora_alpha=16)
    text = ModelCard.load(write_model_card_for_run(str(lora), "alice/lora")).text
    assert "| block_size | 64 |" in text and "| lora_rank | 8 |" in text and "max_seq_length" not in text


def test_push_uploads_an_output_dir_with_a_regenerated_card(hub: HubServer, output_dir: Path, capsys) -> None:
    assert push.main([str(output_dir), "--hub_model_id", "alice/pushed", "--hub_token", TOKEN], retry=FAST) == 0
    assert uploaded(hub, "alice/pushed") == ["README.md", "all_results.json", "config.json", "run_config.json",
                                             "tf_model.h5"]
    card = ModelCard(hub.files("alice/pushed")["README.md"].decode())
    assert card.data.base_model == "google-bert/bert-base-uncased"
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "loss"}
    assert "Uploaded" in capsys.readouterr().out


@pytest.mark.parametrize("setup, argv, code, message", [
    ("no config", ["--hub_token", TOKEN], 2, "has no config.json"),
    ("", ["--hub_token", "hf_wrong"], 2, "rejected the token"),
    ("bad card", ["--hub_token", TOKEN], 1, "Invalid metadata in README.md"),
])
def test_push_fails_with_one_line(hub: HubServer, output_dir: Path, capsys, setup, argv, code, message) -> None:
    if setup == "no config":
        (output_dir / "config.json").unlink()
    if setup == "bad card":
        (output_dir / "README.md").write_text("---\nlicense: [unclosed\n---\n# model\n")
    assert push.main([str(output_dir), *argv], retry=FAST) == code
    error = command_error(capsys.readouterr().err)
    assert error.startswith("error: ") and message in error


def test_push_module_runs_as_a_command(hub: HubServer, output_dir: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tf_finetune.push", str(output_dir), "--hub_private_repo"]
    environment = {**hub_environment(hub.url, str(tmp_path / "home")), "HF_TOKEN": TOKEN}
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert "config.json" in hub.files("alice/sst2-run")
    assert TOKEN not in result.stdout + result.stderr


def test_the_token_is_never_written_or_logged(hub: HubServer, output_dir: Path, tmp_path: Path, caplog, capsys,
                                             monkeypatch) -> None:
    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub then logs every request as a curl command
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    repo_id = check_push_access(None, str(output_dir), TOKEN, private=True)
    write_model_card(str(output_dir), repo_id=repo_id, base_model="google-bert/bert-base-uncased", task_name="sst2",
                     dataset_name=None, metrics=RESULTS, hyperparameters={**RUN_CONFIG, "hub_token": TOKEN})
    uploader = HubUploader(str(output_dir), repo_id, TOKEN, retry=FAST)
    uploader.push("epoch 1", blocking=True)
    hub.fail_next(FAST.attempts, status=500)
    uploader.push("epoch 2", blocking=True)
    assert uploader.failed
    (output_dir / "README.md").unlink()
    assert push.main([str(output_dir), "--hub_model_id", repo_id, "--hub_token", TOKEN], retry=FAST) == 0
    assert push.main([str(output_dir), "--hub_token", TOKEN + "x"], retry=FAST) == 2

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert not [name for name, data in hub.files(repo_id).items() if TOKEN.encode() in data]
    captured = capsys.readouterr()
    assert "Send: curl" in caplog.text and "authorization: <TOKEN>" in caplog.text  # the request log is captured
    assert TOKEN not in caplog.text + captured.out + captured.err + (uploader.last_error or "")


@pytest.mark.parametrize("name, valid", [("alice/model", True), ("bert-base-uncased", True), ("./bert", False),
                                         ("/home/me/bert", False), ("~/bert", False), ("a/b/c", False),
                                         ("not a/valid id", False)])
def test_one_hub_id_rule_for_config_cards_loading_and_push(hub: HubServer, output_dir: Path, name, valid) -> None:
    """--base_model_id, the model card, model loading and the push's repository all ask hub.client.is_repo_id."""
    from tf_finetune.config import TrainConfig
    from tf_finetune.hub.client import is_repo_id
    from tf_finetune.models.loading import _check_local_path
    from tf_finetune.outputs.model_card import is_hub_id

    assert is_repo_id(name) == valid and is_hub_id(name) == valid
    assert not is_repo_id("bert-base-uncased", namespaced=True) and is_repo_id("alice/model", namespaced=True)
    if valid:
        TrainConfig(base_model_id=name).validate()
        _check_local_path(name)  # left to the Hub
    else:
        with pytest.raises(UserError, match="--base_model_id must be a Hub model id"):
            TrainConfig(base_model_id=name).validate()
        with pytest.raises(UserError, match=f"model path {name} does not exist"):
            _check_local_path(name)
    if "/" in name and not name.startswith(("/", "~", ".")):  # a repository of alice's: refused only when invalid
        if valid:
            assert check_push_access(name, str(output_dir), TOKEN, private=False) == name
        else:
            with pytest.raises(UserError, match="not a valid Hub repository id"):
                check_push_access(name, str(output_dir), TOKEN, private=False)


def test_push_runs_through_run_cli(hub: HubServer, output_dir: Path, capsys, monkeypatch) -> None:
    """Like the other commands: Ctrl-C during the upload exits 130 with one line, the package logs to stderr."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(push, "upload_output_dir", interrupted)
    assert push.main([str(output_dir), "--hub_model_id", "alice/pushed", "--hub_token", TOKEN], retry=FAST) == 130
    err = capsys.readouterr().err
    assert "Wrote the model card" in err and err.strip().splitlines()[-1].startswith("interrupted: ")

"""The test hub answers the real huggingface_hub client (and transformers) the way the Hub does."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from hub_server import TOKEN, HubServer, hub, hub_environment  # noqa: F401 - hub is a fixture


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(token=TOKEN)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small model folder with a nested file and a checkpoint subfolder."""
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "checkpoint").mkdir()
    (root / "config.json").write_text('{"model_type": "bert"}')
    (root / "sub" / "notes.txt").write_text("first")
    (root / "checkpoint" / "state.bin").write_bytes(b"\0" * 10)
    return root


def test_whoami_knows_the_tokens_users(hub: HubServer) -> None:
    assert HfApi(endpoint=hub.url, token=TOKEN).whoami()["name"] == "alice"
    assert HfApi(endpoint=hub.url, token="hf_bob_token").whoami()["name"] == "bob"
    with pytest.raises(requests.HTTPError, match="Invalid user token") as error:
        HfApi(endpoint=hub.url, token="hf_wrong").whoami()
    assert error.value.response.status_code == 401


def test_create_repo_is_private_on_request_and_conflicts_unless_exist_ok(hub: HubServer, api: HfApi) -> None:
    url = api.create_repo("alice/secret", private=True)
    assert url == f"{hub.url}/alice/secret" and url.repo_id == "alice/secret"
    with pytest.raises(HfHubHTTPError) as error:
        api.create_repo("alice/secret")
    assert error.value.response.status_code == 409
    assert api.create_repo("alice/secret", exist_ok=True).repo_id == "alice/secret"
    assert api.repo_info("alice/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info("alice/secret")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token="hf_bob_token").repo_info("alice/secret")


def test_writes_need_a_valid_token_of_the_owner(hub: HubServer, api: HfApi, folder: Path) -> None:
    for token, status in ((False, 401), ("hf_wrong", 401)):
        with pytest.raises(HfHubHTTPError) as error:
            HfApi(token=token).create_repo("alice/model")
        assert error.value.response.status_code == status
    for token in ("hf_bob_token", "hf_read_token"):
        with pytest.raises(HfHubHTTPError) as error:
            HfApi(token=token).create_repo("alice/model")
        assert error.value.response.status_code == 403
    assert HfApi(token="hf_read_token").whoami()["auth"]["accessToken"]["role"] == "read"
    api.create_repo("alice/model")
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(token="hf_bob_token").upload_folder(repo_id="alice/model", folder_path=folder)
    assert error.value.response.status_code == 403
    assert len(hub.commits("alice/model")) == 1


def test_upload_folder_commits_only_changes_and_keeps_history(hub: HubServer, api: HfApi, folder: Path) -> None:
    api.create_repo("alice/model")
    first = api.upload_folder(repo_id="alice/model", folder_path=folder, commit_message="epoch 1",
                              ignore_patterns=["checkpoint/**"])
    assert hub.files("alice/model") == {".gitattributes": hub.files("alice/model")[".gitattributes"],
                                        "config.json": b'{"model_type": "bert"}', "sub/notes.txt": b"first"}
    unchanged = api.upload_folder(repo_id="alice/model", folder_path=folder, ignore_patterns=["checkpoint/**"])
    assert unchanged.oid == first.oid  # the client skips unchanged files, so no empty commit
    (folder / "sub" / "notes.txt").write_text("second")
    second = api.upload_folder(repo_id="alice/model", folder_path=folder, commit_message="epoch 2",
                               ignore_patterns=["checkpoint/**", "*.json"], delete_patterns=["*.json"])

    commits = hub.commits("alice/model")
    assert [c.title for c in commits] == ["initial commit", "epoch 1", "epoch 2"]
    assert [c.oid for c in commits[1:]] == [first.oid, second.oid]
    assert [c.commit_id for c in api.list_repo_commits("alice/model")] == [c.oid for c in reversed(commits)]
    info = api.repo_info("alice/model")
    assert info.sha == second.oid
    assert sorted(s.rfilename for s in info.siblings) == [".gitattributes", "sub/notes.txt"]
    assert api.repo_info("alice/model", revision=first.oid).sha == first.oid
    assert sorted(api.list_repo_files("alice/model")) == [".gitattributes", "sub/notes.txt"]
    assert hub.files("alice/model", first.oid)["sub/notes.txt"] == b"first"


def test_downloads_by_branch_and_commit_with_real_client(hub: HubServer, api: HfApi, folder: Path,
                                                         tmp_path: Path) -> None:
    api.create_repo("alice/model", private=True)
    first = api.upload_folder(repo_id="alice/model", folder_path=folder).oid
    (folder / "sub" / "notes.txt").write_text("second")
    api.upload_folder(repo_id="alice/model", folder_path=folder)

    latest = hf_hub_download("alice/model", "sub/notes.txt", token=TOKEN, cache_dir=tmp_path / "cache")
    assert Path(latest).read_text() == "second"
    old = hf_hub_download("alice/model", "sub/notes.txt", revision=first, token=TOKEN, cache_dir=tmp_path / "cache")
    assert Path(old).read_text() == "first"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/model", "missing.txt", token=TOKEN, cache_dir=tmp_path / "cache")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/model", "config.json", revision="0" * 40, token=TOKEN, cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/model", "config.json", token=False, cache_dir=tmp_path / "cache")

    snapshot = Path(snapshot_download("alice/model", token=TOKEN, local_dir=tmp_path / "snapshot"))
    assert sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()
                  and ".cache" not in p.parts) == [".gitattributes", "checkpoint/state.bin", "config.json",
                                                   "sub/notes.txt"]


def test_fail_next_answers_server_errors_then_recovers(hub: HubServer, api: HfApi) -> None:
    hub.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(HfHubHTTPError) as error:
            api.whoami()
        assert error.value.response.status_code == 503
    assert api.whoami()["name"] == "alice"


def test_restart_on_the_same_port_keeps_the_repositories(hub: HubServer, api: HfApi, folder: Path) -> None:
    api.create_repo("alice/model")
    api.upload_folder(repo_id="alice/model", folder_path=folder)
    url = hub.url
    hub.stop()
    with pytest.raises(requests.ConnectionError):
        api.whoami()
    hub.start()
    assert hub.url == url
    assert api.repo_info("alice/model").sha == hub.commits("alice/model")[-1].oid


def test_transformers_loads_from_the_hub_through_hf_endpoint(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    """A subprocess with HF_ENDPOINT set is the plain way; use_endpoint patches this process the same way."""
    from transformers import AutoConfig, BertConfig, BertTokenizerFast

    model = tmp_path / "tiny"
    model.mkdir()
    (model / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
    BertTokenizerFast(str(model / "vocab.txt")).save_pretrained(model)
    BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=8).save_pretrained(model)
    api.create_repo("alice/tiny", private=True)
    api.upload_folder(repo_id="alice/tiny", folder_path=model)

    script = textwrap.dedent(f"""
        from transformers import AutoConfig, AutoTokenizer
        config = AutoConfig.from_pretrained("alice/tiny", token="{TOKEN}")
        tokenizer = AutoTokenizer.from_pretrained("alice/tiny", token="{TOKEN}")
        print(config.hidden_size, tokenizer("hello world")["input_ids"])
    """)
    result = subprocess.run([sys.executable, "-c", script], env=hub_environment(hub.url, str(tmp_path / "home")),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "8 [2, 5, 6, 3]"

    in_process = AutoConfig.from_pretrained("alice/tiny", token=TOKEN, cache_dir=tmp_path / "cache")
    assert in_process.hidden_size == 8

"""Pushing a run to the Hugging Face Hub: token and access checks, background uploads with retries, model cards.

This module imports no TensorFlow. Tokens never appear in its messages, logs or files.
"""
from __future__ import annotations

import itertools
import logging
import numbers
import os
import re
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar
from urllib.parse import urlsplit

import requests
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from tf_finetune.config import SECRET_FIELDS, field_applies, fields_where, is_repo_id
from tf_finetune.errors import UserError
from tf_finetune.outputs import read_json, write_text

logger = logging.getLogger(__name__)

# Never uploaded: resumable training state, hyperparameter-search state, the local MLflow and W&B stores (the
# MLflow store holds a copy of the model) and half-written temporary files.
IGNORE_PATTERNS = ("checkpoint/**", "checkpoint-*/**", "tuning/**", "mlruns/**", "wandb/**", ".tmp*", "**/.tmp*",
                   "*.tmp")
FRAMEWORKS = ("transformers", "tensorflow", "tf-keras", "datasets", "tf-finetune")
_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "samples")
# The run_config.json fields that a model card lists as training hyperparameters.
T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """How often an upload is tried, with exponential back-off between tries."""

    attempts: int = 5
    initial_delay: float = 2.0
    max_delay: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return min(self.initial_delay * 2 ** (attempt - 1), self.max_delay)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub endpoint (HF_ENDPOINT) accepts a TCP connection within `timeout` seconds.

    Offline, the Hub clients retry for a minute before failing; this answers in at most `timeout`.
    """
    from huggingface_hub import constants

    address = urlsplit(constants.ENDPOINT)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((address.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_token(token: Optional[str]) -> Optional[str]:
    """The token to use: the explicit one, else `HF_TOKEN`, else the one saved by `hf auth login`."""
    return token or get_token()


def error_summary(error: BaseException, token: Optional[str]) -> str:
    """A one-line description of an error, with the token masked should it appear."""
    request = getattr(error, "request", None)
    if isinstance(error, requests.ConnectionError) and getattr(request, "url", None):
        summary = f"no connection to {urlsplit(request.url).netloc}"
    else:
        lines = str(error).strip().splitlines()
        summary = lines[0] if lines else type(error).__name__
    return summary.replace(token, "***") if token else summary


def check_push_access(repo_id: Optional[str], output_dir: str, token: Optional[str], private: bool) -> str:
    """Fail fast before training: check the token, then create the repository unless it exists; return its id.

    The repository id defaults to `<user>/<name of output_dir>`. Raises UserError (one line, no token) when there
    is no token, the Hub rejects it, the token cannot write to the namespace or the Hub cannot be reached.
    """
    token = resolve_token(token)
    if not token:
        raise UserError("pushing to the Hub needs a token: pass --hub_token, set HF_TOKEN or run `hf auth login`.")
    api = HfApi(token=token)
    identity = _ask_hub(api.whoami, api.endpoint, token, "checking the token")
    user = identity["name"]
    repo_id = repo_id or f"{user}/{os.path.basename(os.path.abspath(output_dir))}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"{repo_id!r} is not a valid Hub repository id: use NAMESPACE/NAME, e.g. {user}/my-model.") \
            from None
    _check_namespace(identity, repo_id)
    _ask_hub(lambda: api.create_repo(repo_id, private=private, exist_ok=True), api.endpoint, token,
             f"creating {repo_id}")
    return repo_id


def _check_namespace(identity: Mapping[str, Any], repo_id: str) -> None:
    """Refuse read-only tokens and namespaces that are neither the user's nor one of its organisations'."""
    user = identity["name"]
    namespaces = {user, *(org.get("name") for org in identity.get("orgs") or [])}
    namespace = repo_id.split("/")[0]
    if namespace not in namespaces:
        raise UserError(f"user {user} cannot write to {repo_id}: pick a repository in your namespace "
                        f"(--hub_model_id {user}/{repo_id.split('/')[-1]}) or one of your organisations.")
    role = (identity.get("auth") or {}).get("accessToken", {}).get("role")
    if role == "read":
        raise UserError(f"the token of user {user} is read-only: create a token with write access.")


def _ask_hub(call: Callable[[], T], endpoint: str, token: str, action: str) -> T:
    """Run one Hub request; turn its failure into a one-line UserError that says what to do."""
    try:
        return call()
    except OfflineModeIsEnabled:
        raise UserError("HF_HUB_OFFLINE is set: unset it to push to the Hub.") from None
    except (requests.ConnectionError, requests.Timeout) as error:
        raise UserError(f"cannot reach the Hub at {endpoint} while {action} ({error_summary(error, token)}): "
                        "check the network or HF_ENDPOINT, or push later with `python -m tf_finetune.push`.") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise UserError(f"the Hub at {endpoint} rejected the token (invalid or expired): pass a valid "
                            "--hub_token, set HF_TOKEN or run `hf auth login`.") from None
        if status == 403:
            raise UserError(f"the token has no write access while {action} on {endpoint}: use a token with write "
                            "access or a repository in your own namespace.") from None
        raise UserError(f"the Hub at {endpoint} failed while {action}: {error_summary(error, token)}") from None


def upload_output_dir(output_dir: str, repo_id: str, token: Optional[str], commit_message: str, *,
                      retry: Retry = Retry(), ignore_patterns: Sequence[str] = IGNORE_PATTERNS) -> str:
    """Upload a folder to a repository in one commit, retrying connection errors and 5xx answers.

    Files the repository already holds unchanged are skipped. Returns the commit id; raises the last error.
    """
    api = HfApi(token=resolve_token(token))
    for attempt in itertools.count(1):
        try:
            return api.upload_folder(repo_id=repo_id, folder_path=output_dir, commit_message=commit_message,
                                     ignore_patterns=list(ignore_patterns)).oid
        except Exception as error:  # noqa: BLE001 - classified just below, re-raised when final
            if attempt >= retry.attempts or not _is_transient(error):
                raise
            delay = retry.delay(attempt)
            logger.warning("Upload to %s failed (%s); retrying in %.3g s (attempt %d of %d).", repo_id,
                           error_summary(error, api.token), delay, attempt + 1, retry.attempts)
            time.sleep(delay)


def _is_transient(error: BaseException) -> bool:
    """Errors worth retrying: no connection, timeouts, rate limits and server errors."""
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return not isinstance(error, OfflineModeIsEnabled)
    response = getattr(error, "response", None)
    return isinstance(error, requests.HTTPError) and response is not None and (
        response.status_code == 429 or response.status_code >= 500)


def push_command(output_dir: str, repo_id: str) -> str:
    """The command that uploads an output directory later."""
    return f"python -m tf_finetune.push {shlex.quote(output_dir)} --hub_model_id {shlex.quote(repo_id)}"


class HubUploader:
    """Uploads an output directory in a background thread, so training never waits on or fails because of the Hub.

    Each `push` uploads the folder as it is when the upload starts, so a push made while another one still waits
    replaces the waiting one. Uploads run one at a time, in order; transient errors are retried (see `Retry`).
    Errors never reach the caller: `wait()` says whether everything was uploaded, `failed` and `last_error` why
    not, and a final failure logs the command that uploads the folder later.
    """

    def __init__(self, output_dir: str, repo_id: str, token: Optional[str] = None, *, retry: Retry = Retry(),
                 ignore_patterns: Sequence[str] = IGNORE_PATTERNS) -> None:
        self.output_dir = output_dir
        self.repo_id = repo_id
        self.retry = retry
        self.ignore_patterns = tuple(ignore_patterns)
        self.failed = False
        self.last_error: Optional[str] = None
        self.last_commit: Optional[str] = None
        self._token = resolve_token(token)
        self._condition = threading.Condition()
        self._pending: Optional[str] = None
        self._worker: Optional[threading.Thread] = None

    def push(self, commit_message: str, blocking: bool = False) -> None:
        """Queue an upload of the folder's current state; with `blocking`, also wait until it is done."""
        with self._condition:
            if self._pending is not None:
                logger.info("Upload %r replaces the waiting upload %r.", commit_message, self._pending)
            self._pending = commit_message
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="tf-finetune-hub-upload", daemon=True)
                self._worker.start()
        if blocking:
            self.wait()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for queued uploads to finish; True when they are done and the last one succeeded."""
        with self._condition:
            idle = self._condition.wait_for(lambda: self._worker is None, timeout)
            return idle and not self.failed

    def _work(self) -> None:
        while True:
            with self._condition:
                commit_message, self._pending = self._pending, None
                if commit_message is None:
                    self._worker = None
                    self._condition.notify_all()
                    return
            self._upload(commit_message)

    def _upload(self, commit_message: str) -> None:
        try:
            commit = upload_output_dir(self.output_dir, self.repo_id, self._token, commit_message,
                                       retry=self.retry, ignore_patterns=self.ignore_patterns)
        except Exception as error:  # noqa: BLE001 - an upload must never break training
            with self._condition:
                self.failed, self.last_error = True, error_summary(error, self._token)
            logger.warning("Upload of %s to %s failed: %s. Upload it later with: %s", self.output_dir, self.repo_id,
                           self.last_error, push_command(self.output_dir, self.repo_id))
            return
        with self._condition:
            self.failed, self.last_error, self.last_commit = False, None, commit
        logger.info("Uploaded %s to %s (%s, commit %s).", self.output_dir, self.repo_id, commit_message, commit[:8])


def write_model_card(output_dir: str, *, repo_id: str, base_model: Optional[str], task_name: Optional[str],
                     dataset_name: Optional[str], metrics: Mapping[str, Any], hyperparameters: Mapping[str, Any],
                     task_type: Optional[str] = None, dataset_config: Optional[str] = None,
                     license: Optional[str] = None, method: Optional[str] = None,
                     main_metric: Optional[str] = None, pytorch_subfolder: Optional[str] = None,
                     auto_class: str = "TFAutoModel") -> str:
    """Write `output_dir/README.md`: Hub metadata (model-index with the eval metrics) and a readable summary.

    Args:
        repo_id: the Hub repository the card describes.
        base_model: the Hub id of the model fine-tuned (None: "a local checkpoint"; a local path never goes into a
            card, see base_model_hub_id).
        task_name: the tf-finetune task, e.g. "sst2".
        dataset_name: the Hub dataset trained on, if any.
        metrics: results as in all_results.json; the `eval_*` ones go into the model-index.
        hyperparameters: the run's settings; secrets (e.g. hub_token) are left out.
        task_type: the Hub task id, e.g. "text-classification" (default: task_name).
        dataset_config: the dataset's configuration name.
        license: the license id, when known.
        method: a paragraph on how it was trained, when not in full (e.g. LoRA's settings).
        main_metric: the result that picked the best epoch (e.g. eval_accuracy): first in the model-index.
        pytorch_subfolder: the repository folder holding PyTorch weights (--hub_export pytorch), if any.
        auto_class: the transformers TF Auto class that loads the model with its head (the task's).

    Returns the path written. The file is replaced atomically.
    """
    if base_model is not None and not _is_hub_id(base_model):
        raise ValueError(f"base_model must be a Hub id, got the local path {base_model}")
    dataset = dataset_name or task_name or "custom"
    scores = _eval_metrics(metrics)
    first = (main_metric or "")[len("eval_"):] if (main_metric or "").startswith("eval_") else main_metric
    names = sorted(scores, key=lambda name: name != first)  # stable: the others keep their order
    eval_results = [
        EvalResult(task_type=task_type or task_name or "other", task_name=task_name, dataset_type=dataset,
                   dataset_name=dataset, dataset_config=dataset_config, dataset_split="validation",
                   metric_type=name, metric_name=name, metric_value=scores[name])
        for name in names
    ]
    card_data = ModelCardData(
        license=license, base_model=base_model, library_name="transformers", pipeline_tag=task_type,
        tags=[tag for tag in ("tensorflow", "tf-keras", "tf-finetune", task_name) if tag],
        datasets=[dataset_name] if dataset_name else None,
        model_name=repo_id.split("/")[-1], eval_results=eval_results or None,
    )
    body = _card_body(repo_id, base_model, task_name, dataset_name, metrics, hyperparameters, method,
                      _usage(repo_id, auto_class, pytorch_subfolder))
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = os.path.join(output_dir, "README.md")
    write_text(path, str(card))
    return path


def _is_hub_id(name: str) -> bool:
    """Whether a model name is a Hub repository id rather than a local directory."""
    return not os.path.exists(name) and is_repo_id(name)


def _eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric `eval_*` results, without the `eval_` prefix and without speed measurements."""
    return {key[len("eval_"):]: float(value) for key, value in metrics.items()
            if key.startswith("eval_") and _is_number(value) and not key.endswith(_NOT_METRICS)}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _usage(repo_id: str, auto_class: str, pytorch_subfolder: Optional[str]) -> str:
    """How to load the model with its head: with TensorFlow (transformers 4.x), and with PyTorch when the repository
    has weights for it (transformers v5 has no TensorFlow)."""
    tf_code = f'from transformers import {auto_class}\n\nmodel = {auto_class}.from_pretrained("{repo_id}")'
    text = f"With TensorFlow (transformers 4.x):\n\n```python\n{tf_code}\n```"
    if pytorch_subfolder:
        pt_class = auto_class[len("TF"):]
        pt_code = (f'from transformers import {pt_class}\n\nmodel = {pt_class}.from_pretrained("{repo_id}", '
                   f'subfolder="{pytorch_subfolder}")')
        text += f"\n\nWith PyTorch (transformers 4.x or v5):\n\n```python\n{pt_code}\n```"
    return text


def _card_body(repo_id: str, base_model: Optional[str], task_name: Optional[str], dataset_name: Optional[str],
               metrics: Mapping[str, Any], hyperparameters: Mapping[str, Any], method: Optional[str] = None,
               usage: str = "") -> str:
    """The Markdown part of the model card."""
    model = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a local checkpoint"
    origin = f"a fine-tuned version of {model}"
    data = f" on the [{dataset_name}](https://huggingface.co/datasets/{dataset_name}) dataset" if dataset_name else ""
    task = f" for the {task_name} task" if task_name else ""
    results = {key: value for key, value in metrics.items() if _is_number(value)}
    settings = {key: value for key, value in hyperparameters.items() if not _is_secret(key) and value is not None}
    versions = [f"- {name} {version}" for name, version in _framework_versions().items()]
    sections = [
        f"# {repo_id.split('/')[-1]}",
        f"## Model description\n\nThis model is {origin}{data}{task}, trained with TensorFlow/Keras by tf-finetune."
        + (f"\n\n{method}" if method else ""),
        "## Intended use\n\n"
        f"Use it for {task_name or 'the task it was trained on'} on text like its training data. It was evaluated "
        "only on the validation data below: check it on your own data before relying on it.",
        "## How to use\n\n" + usage,
        "## Training hyperparameters\n\n" + _table(("Hyperparameter", "Value"), settings),
        "## Results\n\n" + (_table(("Metric", "Value"), results) if results else "No evaluation results."),
        "## Framework versions\n\n" + "\n".join(versions),
    ]
    return "\n\n".join(sections) + "\n"


def _is_secret(key: str) -> bool:
    return key in SECRET_FIELDS or key.endswith("token")


def _table(header: tuple[str, str], rows: Mapping[str, Any]) -> str:
    """A two-column Markdown table."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for key, value in rows.items():
        shown = f"{value:.4g}" if _is_number(value) and not isinstance(value, numbers.Integral) else str(value)
        lines.append(f"| {key} | {shown.replace('|', '&#124;')} |")
    return "\n".join(lines)


def _framework_versions() -> dict[str, str]:
    """Installed versions of the libraries a run depends on (those that are installed)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_model_card_for_run(output_dir: str, repo_id: str) -> Optional[str]:
    """Write the model card of a finished run from its run_config.json, all_results.json and run_info.json (None if
    it has neither of the first two). Only the settings that apply to the run's task are listed."""
    from tf_finetune.export import PYTORCH_DIR
    from tf_finetune.lora_files import describe_lora
    from tf_finetune.tasks import get_task, list_tasks

    paths = [os.path.join(output_dir, name) for name in ("all_results.json", "run_config.json", "run_info.json")]
    results, run_config, info = (read_json(path) if os.path.isfile(path) else None for path in paths)
    if results is None and run_config is None:
        return None
    run_config, results, info = run_config or {}, results or {}, info or {}
    hyperparameters = {key: run_config[key] for key in fields_where("card")
                       if key in run_config and field_applies(key, run_config)}
    hyperparameters.update(results.get("best_hyperparameters") or {})
    task = get_task(run_config["task"]) if run_config.get("task") in list_tasks() else None
    dataset, dataset_config = (task.hub_dataset(run_config) if task else
                               (run_config.get("dataset_name"), run_config.get("dataset_config_name")))
    base_model = run_config.get("base_model_id") or base_model_hub_id(run_config.get("model_name_or_path"))
    return write_model_card(output_dir, repo_id=repo_id, base_model=base_model, task_name=run_config.get("task"),
                            dataset_name=dataset, dataset_config=dataset_config, metrics=results,
                            hyperparameters=hyperparameters, task_type=task.pipeline_tag if task else None,
                            method=describe_lora(run_config, results), main_metric=info.get("monitor"),
                            pytorch_subfolder=PYTORCH_DIR if os.path.isdir(os.path.join(output_dir, PYTORCH_DIR))
                            else None, auto_class=task.auto_model_class if task else "TFAutoModel")


def base_model_hub_id(name_or_path: Optional[str]) -> Optional[str]:
    """The Hub id of a checkpoint: itself when it is one; for a local folder, the id its own model card loads it by
    (a `from_pretrained('<id>')` whose name is the card's title), else its config's `_name_or_path` when that is a
    Hub id; None when neither says."""
    if not name_or_path:
        return None
    if _is_hub_id(name_or_path):
        return name_or_path
    card = os.path.join(name_or_path, "README.md")
    if os.path.isfile(card):
        text = open(card, encoding="utf-8", errors="replace").read()
        title = re.search(r"^# +(\S+)\s*$", text, flags=re.MULTILINE)
        for found in re.findall(r"""\(\s*['"]([\w.-]+/[\w.-]+)['"]""", text):
            if title and found.split("/")[-1] == title.group(1) and _is_hub_id(found):
                return found
    config = os.path.join(name_or_path, "config.json")
    named = read_json(config).get("_name_or_path") if os.path.isfile(config) else None
    return named if named and named.count("/") == 1 and _is_hub_id(named) else None

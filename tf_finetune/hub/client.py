"""The Hub client: reachability, tokens, access checks and uploads with retries. Network only.

This module imports no TensorFlow, and huggingface_hub only when it is called: importing huggingface_hub imports
tqdm, whose defaults a command sets first (tf_finetune.core.logs.command_logging). Tokens never appear in its
messages, logs or files.
"""
from __future__ import annotations

import itertools
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar
from urllib.parse import urlsplit

import requests

from tf_finetune.core.errors import UserError
from tf_finetune.core.layout import upload_ignore_patterns

logger = logging.getLogger(__name__)

IGNORE_PATTERNS = upload_ignore_patterns()  # what an upload leaves out: see tf_finetune.core.layout.ENTRIES
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
    from huggingface_hub import get_token

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
    from huggingface_hub import HfApi

    token = resolve_token(token)
    if not token:
        raise UserError("pushing to the Hub needs a token: pass --hub_token, set HF_TOKEN or run `hf auth login`.")
    api = HfApi(token=token)
    identity = _ask_hub(api.whoami, api.endpoint, token, "checking the token")
    user = identity["name"]
    repo_id = repo_id or f"{user}/{os.path.basename(os.path.abspath(output_dir))}"
    if not is_repo_id(repo_id):
        raise UserError(f"{repo_id!r} is not a valid Hub repository id: use NAMESPACE/NAME, e.g. {user}/my-model.")
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
    from huggingface_hub.errors import OfflineModeIsEnabled

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
    from huggingface_hub import HfApi

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
    from huggingface_hub.errors import OfflineModeIsEnabled

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


def is_repo_id(name: str, namespaced: bool = False) -> bool:
    """Whether `name` is a valid Hub repository id, `[namespace/]name` (with `namespaced`: `namespace/name`), and
    not a path: the one rule every module asks."""
    if name.startswith((".", "/", "~")) or (namespaced and name.count("/") != 1):
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True

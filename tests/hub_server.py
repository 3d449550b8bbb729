"""A small, real, in-memory Hugging Face Hub for tests.

It speaks the part of the Hub HTTP API that the pinned `huggingface_hub==0.36.2` client uses to check a token,
create a repository, commit a folder (every file as a "regular" base64 upload: no LFS, no Xet), read repository and
revision info, list commits and trees, and download files:

    GET       /api/whoami-v2
    POST      /api/repos/create
    POST      /api/validate-yaml
    GET       /api/models/{repo_id}                       GET /api/models/{repo_id}/revision/{rev}
    POST      /api/models/{repo_id}/preupload/{rev}       POST /api/models/{repo_id}/commit/{rev}
    GET       /api/models/{repo_id}/commits/{rev}         GET /api/models/{repo_id}/tree/{rev}[/{path}]
    HEAD, GET /{repo_id}/resolve/{rev}/{path}

Usage:

    with HubServer(tokens={"hf_test_token": "alice"}) as hub:
        HfApi(endpoint=hub.url, token="hf_test_token").create_repo("alice/model")

Code that does not take an endpoint argument reads the Hub address that huggingface_hub and transformers copied
from `HF_ENDPOINT` when they were imported (and `HfApi(endpoint=...).upload_folder` itself needs it: its CommitInfo
parses the returned commit URL against `constants.ENDPOINT`). So run such code in a subprocess with
`env=hub_environment(hub.url, home)`, or call `use_endpoint(monkeypatch, hub.url)` to patch every copy in this process.
The `hub` fixture (import it into a test module) does the latter, with the user's own login and Hub cache kept away.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

GITATTRIBUTES = b"*.h5 filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_REV = r"(?P<revision>[^/]+)"


@dataclass(frozen=True)
class Commit:
    """One commit of a repository: its id, message, author and the files it holds (path -> git blob id)."""

    oid: str
    title: str
    description: str
    author: str
    date: str
    files: Mapping[str, str]


@dataclass
class _Repo:
    repo_id: str
    owner: str
    private: bool
    history: list[Commit] = field(default_factory=list)


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _HubError(Exception):
    """An error answer: status, message (JSON `error` and `X-Error-Message`) and optional `X-Error-Code`."""

    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise _HubError(400, "request body is not valid JSON") from None


def _git_blob_id(data: bytes) -> str:
    """The id git gives a blob (what the Hub sends as ETag for a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _bearer_token(request: _Request) -> Optional[str]:
    authorization = request.headers.get("Authorization")
    return authorization.removeprefix("Bearer ").strip() if authorization else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(payload: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, {"Content-Type": "application/json", **(headers or {})})


class HubServer:
    """An in-memory Hub on 127.0.0.1 that can be stopped and restarted on the same port with its content kept."""

    def __init__(self, tokens: Optional[Mapping[str, str]] = None, read_only_tokens: Iterable[str] = (),
                 port: int = 0) -> None:
        """`tokens` maps each valid token to its user; those also in `read_only_tokens` cannot write."""
        self.tokens = dict(tokens if tokens is not None else {"hf_test_token": "alice"})
        self.read_only_tokens = frozenset(read_only_tokens)
        self.port = port
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._failures: list[int] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., _Response]]] = [
            ("GET", re.compile(r"/api/whoami-v2"), self._whoami),
            ("POST", re.compile(r"/api/repos/create"), self._create_repo),
            ("POST", re.compile(r"/api/validate-yaml"), self._validate_yaml),
            ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/{_REV})?"), self._repo_info),
            ("POST", re.compile(rf"/api/models/{_REPO}/preupload/{_REV}"), self._preupload),
            ("POST", re.compile(rf"/api/models/{_REPO}/commit/{_REV}"), self._commit),
            ("GET", re.compile(rf"/api/models/{_REPO}/commits/{_REV}"), self._list_commits),
            ("GET", re.compile(rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?"), self._tree),
            ("HEAD", re.compile(rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)"), self._resolve),
            ("GET", re.compile(rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)"), self._resolve),
        ]

    # Lifecycle

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. http://127.0.0.1:43121 (the port is fixed after the first start)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        """Listen on the server's port (a free one on the first start) and answer requests in threads."""
        if self._httpd is not None:
            raise RuntimeError("the hub server is already running")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hub-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; repositories are kept, so `start()` brings the same Hub back on the same port."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Inspection and fault injection

    def commits(self, repo_id: str) -> list[Commit]:
        """The repository's commits, oldest first (the first one is the repository's creation)."""
        with self._lock:
            return list(self._repos[repo_id].history)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of the repository at a branch or commit id, as path -> content."""
        with self._lock:
            commit = self._commit_at(self._repos[repo_id], revision)
            return {path: self._blobs[oid] for path, oid in commit.files.items()}

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` requests, whatever they are, with `status` (a simulated Hub outage)."""
        with self._lock:
            self._failures.extend([status] * count)

    # HTTP plumbing

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: stop() never waits on idle keep-alives

            def do_GET(self) -> None:
                self._reply(hub._dispatch(self._request()))

            def do_HEAD(self) -> None:
                self._reply(hub._dispatch(self._request()), with_body=False)

            def do_POST(self) -> None:
                self._reply(hub._dispatch(self._request()))

            def _request(self) -> _Request:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                return _Request(self.command, parts.path, parse_qs(parts.query), self.headers, body)

            def _reply(self, response: _Response, with_body: bool = True) -> None:
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in response.headers:
                    self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        return Handler

    def _dispatch(self, request: _Request) -> _Response:
        try:
            self._maybe_fail()
            self._user(request)  # like the Hub, any request with an unknown token is refused
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(request.path)
                if method == request.method and match:
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with self._lock:
                        return handler(request, **groups)
            raise _HubError(404, f"no route for {request.method} {request.path} in the test hub")
        except _HubError as error:
            headers = {"X-Error-Message": error.message, **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            return _json({"error": error.message}, error.status, headers)

    def _maybe_fail(self) -> None:
        with self._lock:
            status = self._failures.pop(0) if self._failures else None
        if status is not None:
            raise _HubError(status, "simulated Hub failure")

    # Authentication and access

    def _user(self, request: _Request, required: bool = False) -> Optional[str]:
        """The user a request's Bearer token belongs to; 401 on an unknown token, or on none when required."""
        token = _bearer_token(request)
        if token is None:
            if required:
                raise _HubError(401, "You must be authenticated to access this resource")
            return None
        if token not in self.tokens:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _writer(self, request: _Request) -> str:
        """The user of a request that writes: 401 without a valid token, 403 with a read-only one."""
        user = self._user(request, required=True)
        if _bearer_token(request) in self.read_only_tokens:
            raise _HubError(403, "This token has read access only")
        return user

    def _readable(self, request: _Request, repo_id: str) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and self._user(request) != repo.owner):
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, request: _Request, repo_id: str, revision: str) -> _Repo:
        user = self._writer(request)
        repo = self._readable(request, repo_id)
        if user != repo.owner:
            raise _HubError(403, f"You don't have the rights to write to {repo_id}")
        if revision != "main":
            raise _HubError(404, f"Invalid rev id: {revision} (the test hub has only the main branch)",
                            "RevisionNotFound")
        return repo

    def _commit_at(self, repo: _Repo, revision: str) -> Commit:
        if revision == "main":
            return repo.history[-1]
        for commit in repo.history:
            if commit.oid == revision:
                return commit
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # Repositories and commits

    def _new_commit(self, repo: _Repo, author: str, title: str, description: str, files: Mapping[str, str]) -> Commit:
        parent = repo.history[-1].oid if repo.history else ""
        seed = json.dumps([parent, title, description, sorted(files.items()), next(self._counter)])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), title, description, author, _now(), dict(files))
        repo.history.append(commit)
        return commit

    def _store(self, data: bytes) -> str:
        oid = _git_blob_id(data)
        self._blobs[oid] = data
        return oid

    def _whoami(self, request: _Request) -> _Response:
        user = self._user(request, required=True)
        role = "read" if _bearer_token(request) in self.read_only_tokens else "write"
        return _json({"type": "user", "id": user, "name": user, "fullname": user, "email": None, "orgs": [],
                      "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": role}}})

    def _create_repo(self, request: _Request) -> _Response:
        user = self._writer(request)
        payload = request.json()
        if payload.get("type", "model") != "model":
            raise _HubError(400, "the test hub only hosts model repositories")
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload['name']}"
        if namespace != user:
            raise _HubError(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
        if repo_id in self._repos:  # the client reads the url even from this answer (create_repo(exist_ok=True))
            message = "You already created this model repo"
            return _json({"error": message, "url": self._url(repo_id)}, 409, {"X-Error-Message": message})
        repo = self._repos[repo_id] = _Repo(repo_id, user, bool(payload.get("private")))
        self._new_commit(repo, user, "initial commit", "", {".gitattributes": self._store(GITATTRIBUTES)})
        return _json({"url": self._url(repo_id), "name": repo_id, "id": repo_id})

    def _validate_yaml(self, request: _Request) -> _Response:
        import yaml

        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", request.json().get("content", ""), re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return _json({"errors": [{"message": f"invalid YAML: {error}"}], "warnings": []}, 400)
        if metadata is not None and not isinstance(metadata, dict):
            return _json({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, 400)
        return _json({"errors": [], "warnings": []})

    def _repo_info(self, request: _Request, repo_id: str, revision: str = "main") -> _Response:
        repo = self._readable(request, repo_id)
        commit = self._commit_at(repo, revision)
        siblings = [{"rfilename": path, "size": len(self._blobs[oid]), "blobId": oid}
                    for path, oid in sorted(commit.files.items())]
        return _json({"_id": repo_id, "id": repo_id, "modelId": repo_id, "author": repo.owner, "sha": commit.oid,
                      "lastModified": commit.date, "createdAt": repo.history[0].date, "private": repo.private,
                      "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                      "siblings": siblings})

    def _preupload(self, request: _Request, repo_id: str, revision: str) -> _Response:
        repo = self._writable(request, repo_id, revision)
        head = repo.history[-1]
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": head.files.get(f["path"])}
                 for f in request.json().get("files", [])]
        return _json({"files": files, "commitOid": head.oid})

    def _commit(self, request: _Request, repo_id: str, revision: str) -> _Response:
        repo = self._writable(request, repo_id, revision)
        if "create_pr" in request.query:
            raise _HubError(400, "the test hub does not support pull requests")
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header" or not lines[0]["value"].get("summary"):
            raise _HubError(400, "a commit starts with a header line holding a non-empty summary")
        header = lines[0]["value"]
        head = repo.history[-1]
        if header.get("parentCommit") not in (None, head.oid):
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            self._apply(files, line["key"], line["value"])
        commit = self._new_commit(repo, repo.owner, header["summary"], header.get("description", ""), files)
        commit_url = f"{self._url(repo_id)}/commit/{commit.oid}"
        return _json({"success": True, "commitOid": commit.oid, "commitUrl": commit_url, "hookOutput": "",
                      "pullRequestUrl": None})

    def _apply(self, files: dict[str, str], key: str, value: Mapping[str, Any]) -> None:
        """Apply one commit operation to a path -> blob id mapping."""
        path = value["path"]
        if key == "file":
            if value.get("encoding") != "base64":
                raise _HubError(400, f"{path}: the test hub accepts only base64 file contents")
            files[path] = self._store(base64.b64decode(value["content"]))
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            for name in [name for name in files if name.startswith(prefix)]:
                del files[name]
        else:
            raise _HubError(400, f"{path}: operation {key!r} is not supported (the test hub asks for regular uploads)")

    def _list_commits(self, request: _Request, repo_id: str, revision: str) -> _Response:
        repo = self._readable(request, repo_id)
        upto = repo.history.index(self._commit_at(repo, revision))
        return _json([{"id": c.oid, "title": c.title, "message": c.description, "date": c.date,
                       "authors": [{"user": c.author}]} for c in reversed(repo.history[: upto + 1])])

    def _tree(self, request: _Request, repo_id: str, revision: str, path: str = "") -> _Response:
        commit = self._commit_at(self._readable(request, repo_id), revision)
        recursive = request.query.get("recursive", ["False"])[0].lower() == "true"
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, oid in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                entries[folder] = {"type": "directory", "path": folder, "size": 0,
                                   "oid": hashlib.sha1(folder.encode()).hexdigest()}
            if recursive or len(parts) == 1:
                entries[name] = {"type": "file", "path": name, "size": len(self._blobs[oid]), "oid": oid}
        if prefix and not entries:
            raise _HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        return _json(list(entries.values()))

    def _resolve(self, request: _Request, repo_id: str, revision: str, path: str) -> _Response:
        commit = self._commit_at(self._readable(request, repo_id), revision)
        oid = commit.files.get(path)
        if oid is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self._blobs[oid]
        return _Response(200, data, {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                                     "ETag": f'"{oid}"', "X-Repo-Commit": commit.oid})

    def _url(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"


def use_endpoint(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point this process's huggingface_hub and transformers at `url` and take them online, until the test ends.

    Both libraries copy `HF_ENDPOINT` and `HF_HUB_OFFLINE` when imported: into `constants.ENDPOINT` (read by every
    new `HfApi`), the download URL template that `hf_hub_download` uses without an endpoint argument, the module-level
    `HfApi` behind `huggingface_hub.list_repo_tree` & co, transformers' own copies, and the per-thread HTTP sessions
    (offline ones refuse every request). All of them are patched here, and the sessions get a fresh cache.
    """
    import functools

    from huggingface_hub import constants, file_download, hf_api
    from huggingface_hub.utils import _http
    from transformers.utils import hub as transformers_hub

    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(_http, "_get_session_from_cache",
                        functools.lru_cache(_http._get_session_from_cache.__wrapped__))
    monkeypatch.setattr(transformers_hub, "_is_offline_mode", False)
    monkeypatch.setattr(transformers_hub, "HUGGINGFACE_CO_RESOLVE_ENDPOINT", url)


def hub_environment(url: str, home: str) -> dict[str, str]:
    """Environment for a subprocess that talks to the test hub at `url`, with its caches and login under `home`."""
    environment = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return {**environment, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_HOME": home,
            "HF_HUB_DISABLE_TELEMETRY": "1"}


TOKEN = "hf_test_token"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[HubServer]:
    """A running HubServer (`TOKEN` is alice's, `hf_bob_token` bob's, `hf_read_token` alice's read-only one).

    The user's own login, HF_TOKEN and Hub cache are kept out of the way.
    """
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    tokens = {TOKEN: "alice", "hf_bob_token": "bob", "hf_read_token": "alice"}
    with HubServer(tokens=tokens, read_only_tokens=["hf_read_token"]) as server:
        use_endpoint(monkeypatch, server.url)
        yield server

"""A small in-memory Hugging Face Hub for tests: real HTTP on 127.0.0.1, spoken to by the real huggingface_hub.

It implements the part of the Hub protocol that huggingface_hub (2.x) uses to create a repo, commit files in
"regular" (non-LFS, non-Xet) mode, and download them again:

- ``POST /api/repos/create``                         -> 200 ``{"url": ...}`` (409 with ``url`` when it exists)
- ``POST /api/validate-yaml``                        -> ``{"errors": [], "warnings": []}``
- ``POST /api/models/{repo}/preupload/{rev}``        -> every file ``uploadMode: regular``, ``shouldIgnore: false``
- ``POST /api/models/{repo}/commit/{rev}``           -> NDJSON body (header line, then file lines in base64)
- ``POST /api/models/{repo}/branch/{branch}``        -> create a branch (from ``startingPoint`` or main)
- ``GET  /api/models/{repo}[/revision/{rev}]``       -> ``{"id", "sha", "siblings", "private"}``
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``    -> a JSON list of ``{"type", "path", "size", "oid"}``
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``          -> ``X-Repo-Commit``, ``ETag``, ``Content-Length``

Missing things are told apart the way the Hub does it, by the ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``): huggingface_hub maps a bare 404 to a generic error.

Every commit is kept, so a download can pin a branch name or a 40-hex commit sha. Writes need an
``Authorization: Bearer`` header (any token); a private repo is invisible (``RepoNotFound``) without one.
Tests can also corrupt a stored file in place (:meth:`HubServer.tamper`) to play a compromised mirror.

Test infrastructure only: nothing in the attnzoo package imports this.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(content: bytes) -> str:
    """The git blob sha1 of a file, which the Hub reports as the ETag and tree ``oid`` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


class HubState:
    """The repos, their commits and branches; one lock serialises every request that touches them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) log, handy when a test fails
        self.commit_header: str | None = None  # a hostile mirror: X-Repo-Commit answered with this instead
        self._counter = 0

    def new_sha(self, seed: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{seed}:{self._counter}:{time.time_ns()}".encode()).hexdigest()

    def create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        first = Commit(self.new_sha(repo_id), None, "initial commit", {".gitattributes": _GITATTRIBUTES})
        repo.commits[first.sha] = first
        repo.branches["main"] = first.sha
        self.repos[repo_id] = repo
        return repo


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self._json(status, {"error": message}, extra)

    def _split(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        # Segments are unquoted one by one: a revision like "refs/pr/1" arrives as one %2F-quoted segment.
        segments = [unquote(s) for s in parts.path.split("/") if s]
        return segments, parse_qs(parts.query)

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        return repo

    def _writable_repo(self, repo_id: str) -> Repo | None:
        """The repo a write goes to, or None after answering 401 (no token) or 404 (no such repo)."""
        if not self._authorized():
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        return self._repo(repo_id)

    def _repo_at(self, repo_id: str, revision: str, write: bool = False) -> tuple[Repo | None, Commit | None]:
        """The repo and its commit at ``revision``; (.., None) after answering the error (401/404)."""
        repo = self._writable_repo(repo_id) if write else self._repo(repo_id)
        return repo, (None if repo is None else self._commit(repo, revision))

    def _commit(self, repo: Repo, revision: str) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # ----------------------------------------------------------------------------------------- dispatch
    def do_HEAD(self):
        self._dispatch()

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self) -> None:
        segments, query = self._split()
        self.state.requests.append((self.command, self.path))
        body = self._body() if self.command == "POST" else b""
        with self.state.lock:
            try:
                self._route(segments, query, body)
            except Exception as err:  # a bug in the fake Hub should fail the test loudly, not hang it
                self._error(500, None, f"test hub server error: {type(err).__name__}: {err}")
                raise

    def _route(self, seg: list[str], query: dict[str, list[str]], body: bytes) -> None:
        method = self.command
        if seg[:1] == ["api"]:
            if method == "POST" and seg == ["api", "repos", "create"]:
                return self._create_repo(json.loads(body or b"{}"))
            if method == "POST" and seg == ["api", "validate-yaml"]:
                return self._json(200, {"errors": [], "warnings": []})
            if len(seg) >= 4 and seg[1] == "models":
                repo_id = f"{seg[2]}/{seg[3]}"
                rest = seg[4:]
                if method == "GET" and not rest:
                    return self._revision_info(repo_id, "main")
                if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                    return self._revision_info(repo_id, rest[1])
                if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    return self._tree(repo_id, rest[1], "/".join(rest[2:]), recursive)
                if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    return self._preupload(repo_id, rest[1], json.loads(body or b"{}"))
                if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    return self._commit_files(repo_id, rest[1], body)
                if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                    return self._create_branch(repo_id, rest[1], json.loads(body or b"{}"))
            return self._error(404, None, f"test hub server: no route for {method} {self.path}")
        if method in ("GET", "HEAD") and len(seg) >= 5 and seg[2] == "resolve":
            return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        return self._error(404, None, f"test hub server: no route for {method} {self.path}")

    # ----------------------------------------------------------------------------------------- endpoints
    def _create_repo(self, payload: dict) -> None:
        if not self._authorized():
            return self._error(401, None, "Invalid credentials in Authorization header")
        name, org = payload.get("name"), payload.get("organization")
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        url = f"{self.base_url}/{repo_id}"
        if repo_id in self.state.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        self.state.create_repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> None:
        repo = self._writable_repo(repo_id)
        if repo is None:
            return
        if branch in repo.branches:
            return self._error(409, None, f"Reference already exists: refs/heads/{branch}")
        start = self._commit(repo, payload.get("startingPoint") or "main")
        if start is None:
            return
        repo.branches[branch] = start.sha
        return self._json(200, {})

    def _revision_info(self, repo_id: str, revision: str) -> None:
        repo, commit = self._repo_at(repo_id, revision, write=False)
        if commit is None:
            return
        return self._json(200, {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit.sha,
            "private": repo.private,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })

    def _tree(self, repo_id: str, revision: str, prefix: str, recursive: bool) -> None:
        repo, commit = self._repo_at(repo_id, revision, write=False)
        if commit is None:
            return
        base = f"{prefix.rstrip('/')}/" if prefix else ""
        entries, dirs = [], set()
        for path, content in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            rel = path[len(base):]
            if "/" in rel and not recursive:
                dirs.add(base + rel.split("/")[0])
                continue
            for i, _ in enumerate(rel.split("/")[:-1]):
                dirs.add(base + "/".join(rel.split("/")[: i + 1]))
            entries.append({"type": "file", "path": path, "size": len(content), "oid": git_blob_oid(content)})
        if prefix and not entries and not dirs:
            return self._error(404, "EntryNotFound", f"{prefix} does not exist on {revision}")
        tree = [{"type": "directory", "path": d, "size": 0, "oid": hashlib.sha1(d.encode()).hexdigest()}
                for d in sorted(dirs)]
        return self._json(200, tree + entries)

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        repo, commit = self._repo_at(repo_id, revision, write=True)
        if commit is None:
            return
        files = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"])
            files.append({
                "path": item["path"],
                "uploadMode": "regular",  # keeps the client off LFS and Xet
                "shouldIgnore": False,
                "oid": git_blob_oid(existing) if existing is not None else None,
            })
        return self._json(200, {"files": files, "commitOid": commit.sha})

    def _commit_files(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._writable_repo(repo_id)
        if repo is None:
            return
        if revision not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision} (commits go to a branch)")
        parent = repo.commits[repo.branches[revision]]
        files = dict(parent.files)
        message = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
                expected_parent = value.get("parentCommit")
                if expected_parent and expected_parent != parent.sha:
                    return self._error(412, None, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    return self._error(400, None, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(folder)}
            else:  # lfsFile and the like: this server only offers regular uploads
                return self._error(400, None, f"test hub server: unsupported commit operation {key!r}")
        commit = Commit(self.state.new_sha(repo_id), parent.sha, message, files)
        repo.commits[commit.sha] = commit
        repo.branches[revision] = commit.sha
        return self._json(200, {
            "commitOid": commit.sha,
            "commitUrl": f"{self.base_url}/{repo_id}/commit/{commit.sha}",
            "pullRequestUrl": None,
        })

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo, commit = self._repo_at(repo_id, revision, write=False)
        if commit is None:
            return
        content = commit.files.get(path)
        if content is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}",
                               headers={"X-Repo-Commit": commit.sha})
        return self._send(200, content, headers={
            "X-Repo-Commit": self.state.commit_header or commit.sha,
            "ETag": f'"{git_blob_oid(content)}"',
            "Accept-Ranges": "none",
        }, content_type="application/octet-stream")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: HubState):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class HubServer:
    """Start with :meth:`start`, point ``HF_ENDPOINT`` at :attr:`url`, stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.state = HubState()
        self._server = _Server(self.state)  # binds a free port now, so the url is known before serving
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="test-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def reset(self) -> None:
        with self.state.lock:
            self.state.repos.clear()
            self.state.requests.clear()
            self.state.commit_header = None

    # Helpers for tests -----------------------------------------------------------------------------------
    def head(self, repo_id: str, branch: str = "main") -> str:
        """The commit sha a branch points to."""
        with self.state.lock:
            return self.state.repos[repo_id].branches[branch]

    def file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        with self.state.lock:
            return self.state.repos[repo_id].resolve(revision).files[path]

    def answer_commit(self, header: str | None) -> None:
        """Answer every download with ``X-Repo-Commit: header`` (a hostile mirror; None: the real sha)."""
        with self.state.lock:
            self.state.commit_header = header

    def tamper(self, repo_id: str, path: str, content: bytes, revision: str = "main") -> None:
        """Replace a stored file's bytes in place, without a new commit (a compromised mirror)."""
        with self.state.lock:
            self.state.repos[repo_id].resolve(revision).files[path] = content

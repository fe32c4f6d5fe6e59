"""A real git server on 127.0.0.1 for GitOps tests: git's own ``git http-backend`` behind a
small threaded CGI bridge, speaking smart HTTP with basic auth.

``GitServer(root)`` serves the bare repositories under ``root`` (``<name>.git``) on a free
loopback port once ``start()``-ed. Every request needs the server's basic credentials
(``401`` with ``WWW-Authenticate`` otherwise, also for wrong ones); push is allowed (each
repository has ``http.receivepack true`` and the backend gets ``REMOTE_USER``). Request
bodies may be chunked and gzip-encoded, as git and go-git send them.

Every request is logged (``requests``: method, path, repository, service, status, user,
user agent) so tests can count what a client fetched. The repositories are made and read
as ``bare_repos.BareRepositories`` does for both test servers: ``create_repo`` makes one
with one commit, on disk, so no request is logged; ``commit`` changes files as an outside
writer does: a clone over HTTP, a commit, a push (``commit_local`` writes on disk, unlogged);
``head``, ``files``, ``log`` and ``message`` read a branch straight from the bare repository.

A test can act at an exact point of a client's conversation: ``intercept(hook)`` runs
``hook(request)`` for each request once its answer is made and logged, before it is sent.
What the hook changes, that answer does not show: an outside commit made after the answer
to a fetch and before the client has it makes the client's next push be refused, every time.

Credentials never appear in a process's arguments or in a URL: git gets them as an
``http.extraHeader`` through ``GIT_CONFIG_*`` environment variables.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from tests.harness import leaks
from tests.harness.bare_repos import (
    GIT_TIMEOUT,
    WRITER_EMAIL,
    WRITER_NAME,
    BareRepositories,
    Commit,
    local_env,
)
from tests.harness.procs import LOOPBACK, HarnessError

REALM: Final = "imagedrift-test-git"
DEFAULT_USER: Final = "git-writer"
BACKEND_TIMEOUT: Final = 60.0
SERVICES: Final = ("git-upload-pack", "git-receive-pack")
FLUSH_PKT: Final = b"0000"


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str  # without the query string
    repository: str  # "<name>" of "/<name>.git/...", "" when the path names none
    service: str  # "git-upload-pack", "git-receive-pack" or "" (dumb or unknown requests)
    status: int
    user: str  # the authenticated user, "" when refused
    user_agent: str
    received: float  # time.monotonic() when the request's head was read
    body_bytes: int = 0  # the request body's length as sent (after dechunking)
    chunked: bool = False  # the body came with Transfer-Encoding: chunked
    content_encoding: str = ""  # e.g. "gzip"

    @property
    def advertisement(self) -> bool:
        """``GET .../info/refs?service=...``: how every fetch, clone and push starts."""
        return self.method == "GET" and self.path.endswith("/info/refs")


class GitServer(BareRepositories):
    """Smart-HTTP git server for the bare repositories under ``root``; see the module doc."""

    repo_config = (("http.receivepack", "true"),)

    def __init__(
        self, root: Path, *, user: str = DEFAULT_USER, password: str | None = None
    ) -> None:
        super().__init__(root)
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        leaks.remember(self.password, f"git server password of {user}")
        leaks.remember(_basic(user, self.password), "git server basic auth")
        self.backend = Path(_git_exec_path()) / "git-http-backend"
        self.backend_log = self.root / "http-backend.log"
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[GitRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._scratch: Path | None = None
        self._hook: Callable[[GitRequest], None] | None = None
        self.hook_errors: list[BaseException] = []  # what a hook raised (its answer still went)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> GitServer:
        """Listen on a free 127.0.0.1 port; idempotent."""
        if self._server is not None:
            return self
        if not os.access(self.backend, os.X_OK):
            raise HarnessError(f"git http-backend not found at {self.backend}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.root))
        owner = self

        class Handler(_Handler):
            server_owner = owner

        server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"git-server-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (the repositories stay under ``root``); idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- addresses and credentials ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        if not self.port:
            raise HarnessError("the git server is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    @property
    def credentials(self) -> tuple[str, str]:
        return self.user, self.password

    def git_env(self, credentials: tuple[str, str] | None = None) -> dict[str, str]:
        """Environment for a git client of this server: no user or system configuration,
        no prompt, no proxy, and (unless ``credentials`` is ``("", "")``) an Authorization
        header from the environment, never from the command line."""
        user, password = credentials if credentials is not None else self.credentials
        env = {
            k: v for k, v in local_env().items() if k.lower() not in ("http_proxy", "https_proxy")
        }
        env.update(
            {
                "GIT_ASKPASS": "true",  # a 401 fails at once instead of asking
                "NO_PROXY": LOOPBACK,
                "no_proxy": LOOPBACK,
            }
        )
        if user or password:
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {_basic(user, password)}",
                }
            )
        return env

    def git(
        self,
        *args: str,
        cwd: Path | None = None,
        credentials: tuple[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a git command as a client of this server (see ``git_env``)."""
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=self.git_env(credentials),
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"git {' '.join(args)} failed with code {result.returncode}:\n"
                f"{result.stderr.strip()}"
            )
        return result

    # -- repositories (made and read as BareRepositories does) ---------------------------

    def revert(self, name: str, sha: str, *, branch: str = "main") -> str:
        """What a human does: ``git revert`` of ``sha`` in a clone, pushed as the outside
        writer; the new head."""
        with tempfile.TemporaryDirectory(prefix="imagedrift-revert-") as scratch:
            clone = Path(scratch) / "clone"
            self.git("clone", "--quiet", "--branch", branch, self.url(name), str(clone))
            self.git(
                "-c",
                f"user.name={WRITER_NAME}",
                "-c",
                f"user.email={WRITER_EMAIL}",
                "revert",
                "--no-edit",
                sha,
                cwd=clone,
            )
            self.git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=clone)
        return self.head(name, branch=branch)

    # -- the request log --------------------------------------------------------------------

    @property
    def requests(self) -> list[GitRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(
        self,
        name: str,
        *,
        service: str | None = None,
        status: int | None = None,
        since: float | None = None,
    ) -> list[GitRequest]:
        """Logged requests for repository ``name`` (optionally one service, one status,
        received at or after the ``time.monotonic()`` value ``since``)."""
        return [
            r
            for r in self.requests
            if r.repository == name
            and (service is None or r.service == service)
            and (status is None or r.status == status)
            and (since is None or r.received >= since)
        ]

    def fetches(self, name: str, *, since: float | None = None) -> int:
        """How many times a client was shown ``name``'s refs for fetching (successful
        ``info/refs?service=git-upload-pack``): once per clone, fetch or ls-remote, whether
        or not it then downloaded anything."""
        return sum(
            1
            for r in self.requests_for(name, service="git-upload-pack", status=200, since=since)
            if r.advertisement
        )

    def pushes(self, name: str, *, since: float | None = None) -> int:
        """Successful pushes (``POST .../git-receive-pack``) to ``name``. Before a body
        larger than its post buffer git sends a probe, a lone flush packet: not counted."""
        return sum(
            1
            for r in self.requests_for(name, service="git-receive-pack", status=200, since=since)
            if r.method == "POST" and r.body_bytes > len(FLUSH_PKT)
        )

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- acting between an answer and its sending -------------------------------------------

    @contextmanager
    def intercept(self, hook: Callable[[GitRequest], None]) -> Iterator[None]:
        """Run ``hook(request)`` in the request's thread for every request answered while
        inside: after its answer is made and logged, before it is sent (see the module
        doc). One hook at a time; what it raises is kept in ``hook_errors`` (emptied on
        entering)."""
        with self._lock:
            if self._hook is not None:
                raise HarnessError("the git server runs a hook already")
            self._hook = hook
            self.hook_errors.clear()
        try:
            yield
        finally:
            with self._lock:
                self._hook = None

    # -- internals ------------------------------------------------------------------------

    def _client_git(self, *args: str, cwd: Path | None = None) -> str:
        return self.git(*args, cwd=cwd).stdout

    def _work_dir(self) -> Path:
        if self._scratch is None:
            raise HarnessError("the git server is not started")
        return self._scratch

    def _record(self, request: GitRequest) -> None:
        with self._lock:
            self._requests.append(request)
            hook = self._hook
        if hook is not None:
            try:
                hook(request)
            except Exception as exc:  # the client gets its answer whatever the hook did
                with self._lock:
                    self.hook_errors.append(exc)

    def _check_auth(self, authorization: str) -> str | None:
        """The user name when ``authorization`` carries this server's basic credentials."""
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        ok = secrets.compare_digest(user.encode(), self.user.encode()) and secrets.compare_digest(
            password.encode(), self.password.encode()
        )
        return user if ok else None

    def _run_backend(
        self, handler: _Handler, path: str, query: str, user: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One CGI request to git http-backend: (status, headers, body)."""
        headers = handler.headers
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": handler.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,
            "REMOTE_ADDR": handler.client_address[0],
        }
        # The backend inflates gzip bodies itself and speaks protocol v2 when asked.
        if headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = headers["Content-Encoding"]
        if headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = headers["Git-Protocol"]
        try:
            result = subprocess.run(
                [str(self.backend)],
                input=body,
                env=env,
                capture_output=True,
                timeout=BACKEND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return 504, [("Content-Type", "text/plain")], b"git http-backend timed out\n"
        if result.stderr:
            with self._lock, self.backend_log.open("ab") as log:
                log.write(f"{handler.command} {path}: ".encode() + result.stderr)
        return _parse_cgi(result.stdout)


class _Handler(BaseHTTPRequestHandler):
    server_owner: GitServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read GitServer.requests instead

    def _handle(self) -> None:
        received = time.monotonic()
        owner = self.server_owner
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        repository, service = _classify(path, parts.query)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        body = self._read_body(chunked)
        user = owner._check_auth(self.headers.get("Authorization", ""))
        if user is None:
            status, headers, data = (
                401,
                [
                    ("WWW-Authenticate", f'Basic realm="{REALM}"'),
                    ("Content-Type", "text/plain"),
                ],
                b"authentication required\n",
            )
        else:
            status, headers, data = owner._run_backend(self, path, parts.query, user, body)
        # Logged (and a test's hook run) before answering: a client that has its answer
        # finds it counted.
        owner._record(
            GitRequest(
                self.command,
                path,
                repository,
                service,
                status,
                user or "",
                self.headers.get("User-Agent", ""),
                received,
                body_bytes=len(body),
                chunked=chunked,
                content_encoding=self.headers.get("Content-Encoding", ""),
            )
        )
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self, chunked: bool) -> bytes:
        if chunked:
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer lines, if any, end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_HEAD = _handle


def _classify(path: str, query: str) -> tuple[str, str]:
    """(repository name, service) of a smart-HTTP request path."""
    repository = path.lstrip("/").split(".git/", 1)[0] if ".git/" in path else ""
    service = ""
    if path.endswith("/info/refs"):
        service = parse_qs(query).get("service", [""])[0]
    else:
        for candidate in SERVICES:
            if path.endswith(f"/{candidate}"):
                service = candidate
    return repository, service


def _parse_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """A CGI response (header lines, an empty line, the body) as (status, headers, body)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return 502, [("Content-Type", "text/plain")], b"malformed CGI response\n"
    status = 200
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.strip().split(" ", 1)[0])
        elif name.strip():
            headers.append((name.strip(), value.strip()))
    return status, headers, body


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _git_exec_path() -> str:
    try:
        return subprocess.run(
            ["git", "--exec-path"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"git is required for the git server: {exc}") from exc


__all__ = ["Commit", "GitRequest", "GitServer"]

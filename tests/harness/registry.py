"""A real OCI registry on loopback: the CNCF distribution server (Debian ``docker-registry``).

``Registry`` keeps its port and storage across ``stop()`` / ``start()``, so a test can take
the registry away and bring it back with every image still there. It counts the requests
it served from the registry's own access log (one line per request, written by the
server), so tests can assert how many lookups the operator made.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from imagedrift.registry.base import ANONYMOUS, Credentials
from imagedrift.registry.oci import OciRegistryClient
from tests.harness.procs import LOOPBACK, HarnessError, ManagedProcess, free_port, wait_for

REGISTRY_BINARY = Path("/usr/bin/docker-registry")

# Combined log format, as distribution's access log writes it:
# 127.0.0.1 - - [23/Nov/2026:10:35:56 +0000] "HEAD /v2/foo/manifests/latest HTTP/1.1" 404 96 "" "ua"
_ACCESS_LINE = re.compile(r'^\S+ \S+ \S+ \[([^\]]*)\] "([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')
_SYNC_PARAM = "harness-sync"

_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: imagedrift-test-secret
"""


@dataclass(frozen=True)
class Served:
    """One request the registry answered, from its access log."""

    method: str
    path: str  # without the query string
    query: str
    status: int
    # When the registry logged it (epoch seconds; the access log has whole seconds).
    at: float = field(default=0.0, compare=False)


class Registry:
    """One distribution server with filesystem storage under ``workdir``.

    Use as a context manager or call ``start()`` / ``stop()``; ``close()`` stops it and
    removes the storage when the registry created its own directory.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        binary: Path = REGISTRY_BINARY,
    ) -> None:
        if not binary.is_file():
            raise HarnessError(
                f"{binary} is missing: the OCI registry tests need the Debian package "
                "docker-registry (run `make test` or scripts/install-system-deps.sh)"
            )
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="imagedrift-registry-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.port = port or free_port()
        self.config_path = self.workdir / "config.yml"
        self.config_path.write_text(
            _CONFIG.format(root=self.workdir / "storage", addr=f"{LOOPBACK}:{self.port}")
        )
        self._process: ManagedProcess | None = None
        self._syncs = 0

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, the registry part of image references."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.alive()

    def start(self, timeout: float = 30.0) -> None:
        """Start on ``self.port`` with the same storage; return when ``/v2/`` answers."""
        if self.running:
            return
        process = ManagedProcess(
            "registry", [str(self.binary), "serve", str(self.config_path)], self.workdir
        )
        self._process = process

        def ready() -> bool:
            process.check_alive()  # a port clash or bad config fails fast, with the log
            return httpx.get(f"{self.url}/v2/", timeout=2.0).status_code == 200

        try:
            wait_for(ready, what=f"registry on {self.host}", timeout=timeout, interval=0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (the port and storage stay reserved for ``start()``)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def close(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The registry is down inside the block and up again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def client(self, credentials: Credentials = ANONYMOUS, **options: Any) -> OciRegistryClient:
        """A client for this registry over plain HTTP, retrying quickly (tests wait less)."""
        options.setdefault("backoff", 0.05)
        options.setdefault("max_backoff", 0.2)
        return OciRegistryClient(self.host, credentials, scheme="http", **options)

    # -- request accounting ---------------------------------------------------------------

    def served(self) -> list[Served]:
        """Every request this registry answered so far (all runs, oldest first).

        Call ``sync()`` first when the request just completed: the server writes the log
        line after it sends the response.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        entries: list[Served] = []
        for line in text.splitlines():
            match = _ACCESS_LINE.match(line)
            if not match:
                continue
            path, _, query = match.group(3).partition("?")
            if _SYNC_PARAM in query:
                continue
            at = datetime.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            entries.append(Served(match.group(2), path, query, int(match.group(4)), at))
        return entries

    def sync(self, timeout: float = 5.0) -> None:
        """Return once every request answered before this call is in the access log.

        Sends a marker request and waits for its line: requests answered earlier were
        logged by then, in practice as well as by the server's per-request ordering.
        """
        self._syncs += 1
        marker = f"{_SYNC_PARAM}={self._syncs}-{uuid.uuid4().hex[:8]}"
        httpx.get(f"{self.url}/v2/?{marker}", timeout=2.0)
        wait_for(
            lambda: marker in self.log_path.read_text(errors="replace"),
            what="the registry access log",
            timeout=timeout,
            interval=0.02,
        )
        # Lines of concurrent requests can land just after the marker's.
        time.sleep(0.02)

    def mark(self) -> int:
        """A position in the request log; pass it to ``requests_since``."""
        self.sync()
        return len(self.served())

    def requests_since(
        self, mark: int, *, method: str | None = None, path: str | re.Pattern[str] | None = None
    ) -> list[Served]:
        """Requests answered after ``mark``, optionally only ``method`` and ``path``
        (a substring, or a regex matched with ``search``)."""
        self.sync()
        selected = []
        for entry in self.served()[mark:]:
            if method is not None and entry.method != method:
                continue
            if isinstance(path, str) and path not in entry.path:
                continue
            if isinstance(path, re.Pattern) and not path.search(entry.path):
                continue
            selected.append(entry)
        return selected

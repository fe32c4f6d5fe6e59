"""What must never reach a log line, an Event or a status: the secret values of this session.

Fixtures and fake servers ``remember`` every secret they create or issue (passwords, client
secrets, HMAC keys, webhook secrets, tokens). Processes whose output an SRE reads (the
operator, the CLI) are ``watch``-ed by log file, or their captured output is ``keep``-t;
``snapshot_cluster`` keeps what the cluster shows (Events, ImagePolicy status, the
imagedrift annotations of Deployments) before a test's teardown deletes it.
``tests/e2e/test_no_secret_leaks.py`` runs last and looks for every value in all of it.

State is per process (one pytest session); fake servers issue tokens from their handler
threads, so every access takes the lock. With parallel workers (pytest-xdist) each worker
``export``-s its state when its session ends, into the directory ``EXPORT_DIR_ENV`` names,
and the leak check, running last on one worker, waits for the others' exports and reads
the whole run (``gather``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from tests.harness.controlplane import Kube

MIN_LENGTH = 8  # shorter values ("x", "s3cret") would match by chance
ANNOTATION_PREFIX = "imagedrift.io/"
GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # value -> what it is (the first description wins)
_logs: dict[Path, None] = {}  # insertion-ordered set
_texts: dict[str, str] = {}  # where -> text
_missed: list[str] = []  # snapshots that could not be taken, and why


@dataclass(frozen=True, repr=False)
class Secret:
    value: str
    what: str

    def __repr__(self) -> str:  # failure reports and --showlocals must not print it
        return f"Secret({self.what!r}, {self.redacted})"

    @property
    def redacted(self) -> str:
        """Enough to tell two values apart in a report, nothing to reuse."""
        digest = hashlib.sha256(self.value.encode()).hexdigest()[:8]
        return f"<{len(self.value)} chars, sha256 {digest}…>"

    def forms(self) -> set[str]:
        """The value as it would be written: verbatim, or percent-encoded in a URL."""
        return {self.value, quote(self.value, safe="")}


@dataclass(frozen=True)
class Leak:
    secret: Secret
    where: str
    line: int  # 1-based line of ``where`` holding the value

    def __str__(self) -> str:
        return f"{self.secret.what} {self.secret.redacted} in {self.where}, line {self.line}"


def remember(value: str | bytes | None, what: str) -> None:
    """Note a secret value the suite created or a fake server issued (short ones are
    ignored)."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not value or len(value) < MIN_LENGTH:
        return
    with _lock:
        _secrets.setdefault(value, what)


def watch(path: Path) -> None:
    """Note a log file whose lines must hold no secret (read at check time)."""
    with _lock:
        _logs[Path(path)] = None


def keep(where: str, text: str) -> None:
    """Note text a user sees that is gone by check time (captured output, deleted objects);
    a second, different text for ``where`` is kept beside the first."""
    if not text:
        return
    with _lock:
        key, n = where, 1
        while key in _texts and _texts[key] != text:
            n += 1
            key = f"{where} #{n}"
        _texts[key] = text


def remembered() -> list[Secret]:
    with _lock:
        return [Secret(value, what) for value, what in _secrets.items()]


def watched() -> list[Path]:
    with _lock:
        return list(_logs)


def kept() -> dict[str, str]:
    with _lock:
        return dict(_texts)


def find(secrets: Iterable[Secret], sources: Mapping[str, str]) -> list[Leak]:
    """Every (secret, source) pair where a form of the secret occurs in the source's text."""
    found = []
    for secret in secrets:
        for where, text in sources.items():
            for form in secret.forms():
                at = text.find(form)
                if at >= 0:
                    found.append(Leak(secret, where, text.count("\n", 0, at) + 1))
                    break
    return found


def snapshot_cluster(kube: Kube, timeout: float = 10) -> None:
    """Keep every Event (reason, message, involved object), every ImagePolicy's status and
    every Deployment's imagedrift annotations as they are now, one text per object version
    (a later status can overwrite a leaking one)."""
    for event in kube.core.list_event_for_all_namespaces(_request_timeout=timeout).items:
        meta, obj = event.metadata, event.involved_object
        keep(
            f"Event {meta.namespace}/{meta.name}@{meta.resource_version}",
            _dumps(
                {
                    "reason": event.reason,
                    "message": event.message,
                    "involvedObject": f"{obj.kind} {obj.namespace or ''}/{obj.name}",
                }
            ),
        )
    policies = kube.custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, _request_timeout=timeout
    )
    assert isinstance(policies, dict), policies
    for policy in policies.get("items") or []:
        name, version = policy["metadata"]["name"], policy["metadata"]["resourceVersion"]
        keep(
            f"ImagePolicy {name}@{version} status",
            _dumps(policy.get("status") or {}),
        )
    for deployment in kube.apps.list_deployment_for_all_namespaces(_request_timeout=timeout).items:
        m = deployment.metadata
        assert m is not None, deployment  # the API server always sends it
        ours = {k: v for k, v in (m.annotations or {}).items() if k.startswith(ANNOTATION_PREFIX)}
        if ours:
            where = f"Deployment {m.namespace}/{m.name}@{m.resource_version} annotations"
            keep(where, _dumps(ours))


EXPORT_DIR_ENV = "IMAGEDRIFT_TEST_LEAKS_DIR"


@dataclass(frozen=True)
class Run:
    """What the whole run remembered, watched and kept (every worker's, merged)."""

    secrets: list[Secret]
    logs: list[Path]
    texts: dict[str, str]
    missed: list[str]


def worker_name() -> str:
    """This process's name among the parallel workers ("main" when there are none)."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def export() -> None:
    """Write this process's state for the leak check (atomically: a half-written file is
    never read)."""
    directory = os.environ.get(EXPORT_DIR_ENV)
    if not directory:
        return
    with _lock:
        doc = {
            "secrets": dict(_secrets),
            "logs": [str(p) for p in _logs],
            "texts": dict(_texts),
            "missed": list(_missed),
        }
    target = Path(directory) / f"{worker_name()}.json"
    partial = target.with_suffix(".part")
    partial.write_text(json.dumps(doc))
    partial.replace(target)


def other_workers() -> list[str]:
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    return [f"gw{i}" for i in range(count) if f"gw{i}" != worker_name()]


def others_exported() -> bool:
    """Has every other parallel worker finished and exported (True without workers)?"""
    directory = os.environ.get(EXPORT_DIR_ENV, "")
    return all((Path(directory) / f"{w}.json").exists() for w in other_workers())


def gather() -> Run:
    """This process's state merged with every other worker's export (call once
    ``others_exported()``)."""
    with _lock:
        secrets = dict(_secrets)
        logs = dict(_logs)
        texts = dict(_texts)
        missed = list(_missed)
    directory = os.environ.get(EXPORT_DIR_ENV, "")
    for worker in other_workers():
        doc = json.loads((Path(directory) / f"{worker}.json").read_text())
        for value, what in doc["secrets"].items():
            secrets.setdefault(value, what)
        logs.update((Path(p), None) for p in doc["logs"])
        texts.update({f"{worker}: {where}": text for where, text in doc["texts"].items()})
        missed += [f"{worker}: {m}" for m in doc["missed"]]
    return Run([Secret(v, w) for v, w in secrets.items()], list(logs), texts, missed)


def missed_snapshot(where: str, why: BaseException) -> None:
    """A snapshot that could not be taken: the leak check reports it instead of looking
    at less than it says."""
    with _lock:
        _missed.append(f"{where}: {why!r}")


def missed() -> list[str]:
    with _lock:
        return list(_missed)


def _dumps(doc: Any) -> str:
    # ensure_ascii=False: a value is found as written, not as \\u escapes.
    return json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True)

"""Where a GitOps-managed workload's manifests live, and the credentials to write there:
read from the cluster, cached for a short while.

- ``SourceFinder`` answers ``core.gitops_source`` from the Flux Kustomization and
  GitRepository, or the Argo CD Application, that apply a workload (or the policy's own
  ``spec.gitops.repository``). The objects are read at most once per ``ttl`` each, whatever
  the number of workloads that name them: 500 workloads of one Kustomization are two GETs.
- ``GitCredentialStore`` maps a repository URL to the Secret for it, in the operator's
  namespace: the index Secret ``imagedrift-git`` (key ``repositories``: lines of
  ``<URL prefix> <Secret name>``, the longest prefix wins) names it, and it holds the keys
  Flux's GitRepository Secrets have: ``username``/``password`` (a token is a password), or
  ``identity``/``known_hosts`` for SSH; ``token`` for the pull-request API when the
  password is not one; ``signingKey``, an SSH private key that signs every commit.
  Secrets are read by name (the operator may not list them), each at most once per ``ttl``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from imagedrift.core.gitops import GITOPS_KEY
from imagedrift.core.gitops_source import (
    FLUX_NAME,
    GitSource,
    argocd_app_name,
    argocd_source,
    credentials_for,
    flux_source,
)
from imagedrift.core.gitops_spec import GitOpsSpec
from imagedrift.engine.ports import GitOpsReader
from imagedrift.errors import GitError, KubeError
from imagedrift.git.repository import GitCredentials

TTL = 30.0  # seconds an object or a Secret is trusted
INDEX_SECRET = "imagedrift-git"  # which Secret holds the credentials of which repository
INDEX_KEY = "repositories"
ARGOCD_NAMESPACE = "argocd"  # where Applications live unless their name says otherwise


class SourceFinder:
    def __init__(
        self,
        kube: GitOpsReader,
        *,
        ttl: float = TTL,
        argocd_namespace: str = ARGOCD_NAMESPACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.ttl = ttl
        self.argocd_namespace = argocd_namespace
        self.clock = clock
        self._objects: dict[tuple[str, str, str], tuple[float, Mapping[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # GETs made (for tests and benchmarks)

    def find(self, obj: Mapping[str, Any], spec: GitOpsSpec) -> GitSource | str:
        """The git source of the workload ``obj``, or why there is none. Never raises: a
        read that fails is the reason (the next check reads again)."""
        meta = obj.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        annotations = {**(meta.get("annotations") or {}), **(obj.get(GITOPS_KEY) or {})}
        try:
            found = self._from_cluster(labels, annotations)
        except KubeError as exc:
            found = f"its GitOps objects could not be read ({exc})"
        override = spec.repository
        if override is None:
            return found
        # The policy names the repository: the cluster's objects still say where
        # manifests without a namespace deploy, when they can be read.
        target = found.target_namespace if isinstance(found, GitSource) else ""
        return GitSource(
            override.url, override.branch, override.path, "spec.gitops.repository", target
        )

    def _from_cluster(self, labels: dict[str, str], annotations: dict[str, str]) -> GitSource | str:
        if FLUX_NAME in labels:
            return flux_source(labels, self._get)
        app = argocd_app_name(labels, annotations)
        if not app:
            return (
                "no Flux Kustomization or Argo CD Application names its repository; name it "
                "in spec.gitops.repository"
            )
        namespace, _, name = app.rpartition("_")  # apps in any namespace: "<ns>_<name>"
        application = self._get("Application", namespace or self.argocd_namespace, name)
        if application is None:
            return f"Argo CD Application {namespace or self.argocd_namespace}/{name} not found"
        return argocd_source(application)

    def _get(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        key = (kind, namespace, name)
        now = self.clock()
        # Held across the GET: workers checking policies of one Kustomization at once wait
        # for the one read instead of each sending theirs (reads are cached, and short).
        with self._lock:
            cached = self._objects.get(key)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
            body = self.kube.get_gitops_object(kind, namespace, name)
            self.reads += 1
            self._objects[key] = (now, body)
            return body


class GitCredentialStore:
    def __init__(
        self,
        kube: GitOpsReader,
        *,
        index: str = INDEX_SECRET,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.index = index
        self.ttl = ttl
        self.clock = clock
        self._read: dict[str, tuple[float, dict[str, bytes] | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str) -> GitCredentials | None:
        """The credentials for ``url`` (None: none configured; git tries without).
        Raises GitError when a Secret cannot be read or the index names a missing one."""
        index = self._secret(self.index) or {}
        try:
            prefixes = parse_index(index.get(INDEX_KEY, b"").decode())
        except ValueError as exc:
            raise GitError(f"Secret {self.index}, key {INDEX_KEY}: {exc}") from exc
        name = credentials_for(url, {n: p for p, n in prefixes.items()})
        if not name:
            return None
        data = self._secret(name)
        if data is None:
            raise GitError(f"Secret {name} (named for {url} in Secret {self.index}) not found")
        return GitCredentials(
            username=data.get("username", b"").decode() or ("git" if data.get("password") else ""),
            password=data.get("password", b"").decode(),
            ssh_key=data.get("identity", b""),
            known_hosts=data.get("known_hosts", b""),
            token=data.get("token", b"").decode(),
            signing_key=data.get("signingKey", b""),
        )

    def _secret(self, name: str) -> dict[str, bytes] | None:
        now = self.clock()
        with self._lock:
            cached = self._read.get(name)
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1]
            try:
                data = self.kube.read_secret(name)
            except KubeError as exc:
                raise GitError(f"git credentials could not be read: {exc}") from exc
            self._read[name] = (now, data)
            return data


def parse_index(text: str) -> dict[str, str]:
    """The index Secret's ``repositories``: one ``<URL prefix> <Secret name>`` per line
    (``#`` comments and blank lines allowed) -> {prefix: Secret name}."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or ("://" not in words[0] and "@" not in words[0]):
            raise ValueError(f"line {number}: write '<repository URL prefix> <Secret name>'")
        out[words[0]] = words[1]
    return out

"""Pull requests for GitOps write-back: the API clients per repository, and what became of a
pull request imagedrift opened.

The token is the repository's git credentials' ``token``, else their password
(``GitCredentialStore``): GitHub, GitLab and Azure DevOps all take one personal access
token for both. Clients are
kept per (repository, provider, API); a pull request's state is asked at most once per
``ttl`` (the check that waits on it asks every few seconds; a human merges in minutes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from imagedrift.core.gitops_spec import PullRequestSpec
from imagedrift.errors import GitError, InvalidSpec
from imagedrift.git.pullrequests import PullRequest, PullRequests, for_repository
from imagedrift.git.repository import GitCredentials

TTL = 15.0


class PullRequestClients:
    def __init__(
        self,
        credentials: Callable[[str], GitCredentials | None],
        *,
        verify: bool | str | Path = True,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
        make: Callable[..., PullRequests] = for_repository,
    ) -> None:
        self._credentials = credentials
        self._verify = verify
        self._ttl = ttl
        self._clock = clock
        self._make = make
        self._clients: dict[tuple[str, str, str, str], PullRequests] = {}
        self._states: dict[tuple[str, str, str], tuple[float, PullRequest | None]] = {}
        self._lock = threading.Lock()

    def client(self, url: str, spec: PullRequestSpec) -> PullRequests:
        """The pull requests of the repository cloned from ``url``. Raises GitError (no
        token, or a URL that names no provider: the workload's reason)."""
        creds = self._credentials(url)
        token = creds.api_token if creds is not None else ""
        if not token:
            raise GitError(
                f"no token for pull requests on {url}: its credentials Secret has no token or "
                "password"
            )
        key = (url, spec.provider, spec.api_url, spec.repository_url)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    client = self._make(
                        spec.repository_url or url,
                        token,
                        spec.api_url,
                        verify=self._verify,
                        provider=spec.provider,
                    )
                except InvalidSpec as exc:
                    raise GitError(f"pull requests on {url}: {exc}") from exc
                self._clients[key] = client
            return client

    def find(self, url: str, spec: PullRequestSpec, head: str, base: str) -> PullRequest | None:
        """The pull request from ``head`` into ``base`` (open first), asked at most once per
        ``ttl``. Raises GitError, GitAuthError."""
        key = (url, head, base)
        now = self._clock()
        with self._lock:
            cached = self._states.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        found = self.client(url, spec).find(head, base)
        self.remember(url, head, base, found)
        return found

    def remember(self, url: str, head: str, base: str, pr: PullRequest | None) -> None:
        with self._lock:
            self._states[url, head, base] = (self._clock(), pr)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

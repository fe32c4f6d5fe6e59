"""The exceptions imagedrift raises, one tree so callers can catch at the depth they mean.

    ImageDriftError
    ├── InvalidSpec              the user's ImagePolicy cannot be acted on (permanent: Stalled)
    ├── InvalidReference         an image reference, tag, range or pattern does not parse
    ├── TagPolicyFailed          the tag policy cannot order the tags it met (fails closed)
    └── RegistryError            anything that went wrong talking to a registry
        ├── RegistryUnavailable  connection refused, timeout, 5xx: retry with backoff
        ├── RegistryThrottled    429; carries retry_after seconds: retry, do not fail the policy
        │   └── RequestBudgetSpent   our own per-registry budget refused it (nothing was sent)
        ├── RegistryAuthError    401/403 or a credential that cannot get a token; names the identity
        └── NotFound             the repository, tag, manifest or blob does not exist
    └── GitError                 a git server could not be read or written: retry with backoff
        ├── GitAuthError         the server refused the credentials
        └── GitConflict          someone changed what imagedrift meant to change: not retried

The Kubernetes adapter raises ``KubeConflict`` (a 409 on an optimistic patch) and
``KubeError`` for everything else it cannot do.
"""

from __future__ import annotations


class ImageDriftError(Exception):
    """Base of every error imagedrift raises on purpose."""


class InvalidSpec(ImageDriftError):
    """The ImagePolicy spec cannot be acted on; retrying will not help."""


class InvalidReference(ImageDriftError, ValueError):
    """An image reference, tag, version range or tag pattern does not parse."""


class TagPolicyFailed(ImageDriftError):
    """The tag policy cannot order the tags the registry lists (Flux's numerical policy over
    a value that is not a number): no tag is a candidate until the tags or the spec change."""


class RegistryError(ImageDriftError):
    """A registry request failed. ``registry`` names the host."""

    def __init__(self, message: str, *, registry: str = "") -> None:
        super().__init__(message)
        self.registry = registry


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or answered 5xx; worth retrying."""


class RegistryThrottled(RegistryError):
    """The registry answered 429; ``retry_after`` is how long it asked us to wait."""

    def __init__(self, message: str, *, registry: str = "", retry_after: float = 0.0) -> None:
        super().__init__(message, registry=registry)
        self.retry_after = retry_after


class RequestBudgetSpent(RegistryThrottled):
    """Our own per-registry request budget is spent: the request was not sent. Callers must
    not sleep on it in place (that would hold a worker); the check is rescheduled instead."""


class RegistryAuthError(RegistryError):
    """Credentials were refused or no token could be obtained; ``identity`` names who we were."""

    def __init__(self, message: str, *, registry: str = "", identity: str = "") -> None:
        super().__init__(message, registry=registry)
        self.identity = identity


class NotFound(RegistryError):
    """The repository, tag, manifest or blob does not exist."""


class KubeError(ImageDriftError):
    """A Kubernetes API call failed for a reason other than a conflict."""


class KubeConflict(KubeError):
    """An optimistic write lost a race (HTTP 409); re-read and decide again."""


class GitError(ImageDriftError):
    """A git server could not be read or written (down, timed out, pushes kept failing)."""


class GitAuthError(GitError):
    """The git server refused the credentials (or asked for some and none were given)."""


class GitConflict(GitError):
    """Someone else changed the value imagedrift meant to change: not retried blindly."""

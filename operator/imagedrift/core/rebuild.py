"""When to ask for a rebuild: pure decisions over status and spec, no I/O.

The ledger is ``status.rebuild``: the base digest a rebuild was last asked for, how it went
(``outcome``), how many attempts were made for that digest and which triggers succeeded.
A rebuild is asked for at most once per base digest:

- only when ``spec.rebuild`` configures a trigger, the check saw a base digest and at least
  one workload is drifted (running an image that is not built on that digest);
- never again for a digest whose triggers all succeeded;
- a failed attempt is retried with exponential backoff (``RETRY_BASE`` seconds, doubling,
  at most ``RETRY_MAX`` apart), at most ``MAX_ATTEMPTS`` times in all for one digest, and
  only the triggers that failed are fired again (an ACR Task that did start is not started
  twice). The retry happens on the first check after the backoff has passed;
- triggers fire off the controller's workers: the ledger says ``Triggering`` until they
  answered. One that never answers (the operator restarted while it ran) counts as failed
  once ``STALE_TRIGGERING`` has passed, and is retried like a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from imagedrift.core.conditions import parse_timestamp
from imagedrift.errors import InvalidSpec

TRIGGERED: Final = "Triggered"
FAILED: Final = "Failed"
TRIGGERING: Final = "Triggering"  # fired, not answered yet
STALE_TRIGGERING: Final = 600.0  # seconds: a trigger's own timeouts are far shorter
MAX_ATTEMPTS: Final = 5
RETRY_BASE: Final = 60.0
RETRY_MAX: Final = 3600.0
TRIGGER_KINDS: Final = ("acrTask", "webhook")


@dataclass(frozen=True)
class AcrTaskSpec:
    subscription_id: str
    resource_group: str
    registry: str
    task_name: str
    endpoint: str = ""
    audience: str = ""


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    secret_name: str
    secret_key: str = "hmacKey"


@dataclass(frozen=True)
class RebuildSpec:
    acr_task: AcrTaskSpec | None = None
    webhook: WebhookSpec | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The configured triggers, in the order they fire."""
        return tuple(
            kind
            for kind, value in (("acrTask", self.acr_task), ("webhook", self.webhook))
            if value is not None
        )


def parse_rebuild(raw: Mapping[str, Any] | None) -> RebuildSpec | None:
    """``spec.rebuild`` as values; None when no trigger is configured. Raises InvalidSpec."""
    if not raw:
        return None
    acr_raw = raw.get("acrTask") or None
    hook_raw = raw.get("webhook") or None
    acr = None
    if acr_raw:
        missing = [
            k
            for k in ("subscriptionId", "resourceGroup", "registry", "taskName")
            if not acr_raw.get(k)
        ]
        if missing:
            raise InvalidSpec(f"spec.rebuild.acrTask needs {', '.join(missing)}")
        acr = AcrTaskSpec(
            subscription_id=str(acr_raw["subscriptionId"]),
            resource_group=str(acr_raw["resourceGroup"]),
            registry=str(acr_raw["registry"]),
            task_name=str(acr_raw["taskName"]),
            endpoint=str(acr_raw.get("endpoint") or ""),
            audience=str(acr_raw.get("audience") or ""),
        )
    hook = None
    if hook_raw:
        secret_ref = hook_raw.get("secretRef") or {}
        if not hook_raw.get("url") or not secret_ref.get("name"):
            raise InvalidSpec("spec.rebuild.webhook needs url and secretRef.name")
        hook = WebhookSpec(
            url=str(hook_raw["url"]),
            secret_name=str(secret_ref["name"]),
            secret_key=str(secret_ref.get("key") or "hmacKey"),
        )
    if acr is None and hook is None:
        return None
    return RebuildSpec(acr_task=acr, webhook=hook)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt for one digest."""
    return float(min(RETRY_BASE * 2 ** max(attempts - 1, 0), RETRY_MAX))


def should_trigger(
    previous_status: Mapping[str, Any],
    new_base_digest: str,
    rebuild: RebuildSpec | None,
    *,
    drifted: int,
    now: datetime,
) -> bool:
    """Whether this check should fire the triggers of ``rebuild`` (the policy's parsed
    ``spec.rebuild``, ``PolicySpec.rebuild``).

    ``previous_status`` is the policy's status as last written (``rebuild`` is the ledger),
    ``new_base_digest`` the base digest this check saw, ``drifted`` how many workloads run
    images not built on it, ``now`` the current time (aware). See the module docstring.
    """
    if rebuild is None or not new_base_digest or drifted <= 0:
        return False
    ledger = previous_status.get("rebuild") or {}
    if ledger.get("baseDigest") != new_base_digest:
        return True  # the base moved since the last rebuild was asked for (or never was)
    last = parse_timestamp(str(ledger.get("triggeredAt") or ""))
    outcome = ledger.get("outcome")
    if outcome == TRIGGERING:
        # Still firing; or fired by a process that died before it could record the answer.
        if last is not None and now < last + timedelta(seconds=STALE_TRIGGERING):
            return False
    elif outcome != FAILED:
        return False
    pending = [k for k in rebuild.kinds if k not in (ledger.get("succeeded") or [])]
    attempts = int(ledger.get("attempts") or 1)
    if not pending or attempts >= MAX_ATTEMPTS:
        return False
    return last is None or now >= last + timedelta(seconds=retry_delay(attempts))

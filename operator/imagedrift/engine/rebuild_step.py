"""The rebuild step of a check: after ``PolicyChecker.check``, fire the policy's rebuild
triggers when ``core.rebuild.should_trigger`` says so, and record ``status.rebuild`` and an
Event (``Normal RebuildTriggered`` / ``Warning RebuildFailed``).

The wiring builds one ``RebuildStep`` and hands it to the controller, which runs it after
every check. Besides the status ledger, the step remembers in memory what it fired per
policy (by uid), so a status write that has not landed yet cannot cause a second run for
one digest; a deleted policy is forgotten, and the memory is bounded besides.

The request names every container the check decided is still on an old base
(``CheckResult.drifted``, from the decisions, not the status list, which is capped and may
be trimmed to fit), at most ``MAX_LISTED_WORKLOADS``.

Triggers never hold a controller worker: with ``workers`` > 0 (the wiring's choice) they
fire on the step's own threads. The check then records ``Triggering``; when the triggers
answered (their own timeouts bound that, ``rebuild.triggers``), the step asks for the policy
to be checked again (``on_done``), and that check records the outcome and its Event.
With ``workers`` = 0 they fire in the caller's thread and the same check records them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imagedrift.core import conditions as cond
from imagedrift.core.conditions import timestamp
from imagedrift.core.rebuild import FAILED, TRIGGERED, TRIGGERING, RebuildSpec, should_trigger
from imagedrift.core.spec import PolicySpec
from imagedrift.engine.ports import Event
from imagedrift.errors import ImageDriftError, InvalidSpec
from imagedrift.rebuild.triggers import (
    AcrTaskTrigger,
    RebuildRequest,
    Trigger,
    TriggerResult,
    WebhookTrigger,
)

if TYPE_CHECKING:
    from imagedrift.engine.check import CheckResult

log = logging.getLogger(__name__)
MAX_LISTED_WORKLOADS = 100
MAX_REMEMBERED = 1000  # policies whose last trigger the step remembers


class SecretReader(Protocol):
    def read_secret(self, name: str) -> dict[str, bytes] | None: ...


TriggerFactory = Callable[[str, RebuildSpec, PolicySpec], Trigger]


class RebuildStep:
    """Fires rebuild triggers for checks that call for one. Thread-safe.

    ``secrets`` reads Secrets in the operator's namespace (the webhook's HMAC key, a service
    principal's client secret); ``verify`` is the CA bundle (or bool) for outgoing TLS.
    ``make_trigger(kind, rebuild, policy)`` may be replaced (tests).
    """

    def __init__(
        self,
        secrets: SecretReader | None,
        *,
        verify: bool | str | Path = True,
        make_trigger: TriggerFactory | None = None,
        max_remembered: int = MAX_REMEMBERED,
        workers: int = 0,
    ) -> None:
        self._secrets = secrets
        self._verify = verify
        self._make_trigger = make_trigger or self._default_trigger
        self._lock = threading.Lock()
        # policy uid -> (policy name, last ledger, its Event once it is to be posted), oldest
        # first; it bridges a status write in flight and a trigger firing in the background,
        # so the oldest go first once there are more than ``max_remembered``, and a deleted
        # policy's entry goes with it (``forget``).
        self._fired: dict[str, tuple[str, dict[str, Any], Event | None]] = {}
        self._max_remembered = max_remembered
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="imagedrift-rebuild")
            if workers > 0
            else None
        )
        self.on_done: Callable[[str], None] = lambda name: None  # check policy ``name`` again

    def apply(
        self, policy: PolicySpec, body: Mapping[str, Any], result: CheckResult, now: datetime
    ) -> None:
        """Fire the triggers if this check calls for it; add ``rebuild`` to
        ``result.status`` and an Event to ``result.events`` when it did (or when triggers
        fired in the background have answered since). Never raises for a trigger's
        failure: that is recorded in ``status.rebuild`` and a Warning Event."""
        rebuild = policy.rebuild
        if rebuild is None:
            return
        uid = str((body.get("metadata") or {}).get("uid") or policy.name)
        with self._lock:
            _, remembered, answered = self._fired.get(uid, ("", {}, None))
            if answered is not None:  # fired in the background, answered since: say so once
                self._fired[uid] = (policy.name, remembered, None)
        if answered is not None:
            result.status["rebuild"] = dict(remembered)
            result.events.append(Event(body, answered.type, answered.reason, answered.message))
        if any(c.type == cond.READY and not c.status for c in result.conditions):
            return  # the check failed; it saw nothing to rebuild for
        digest = str((result.status.get("base") or {}).get("digest") or "")
        previous = dict(body.get("status") or {})
        ledger = dict(previous.get("rebuild") or {})
        # The status may lag behind what this process fired (its patch is written after
        # the check returns); the newer of the two records is the ledger.
        if remembered and str(remembered.get("triggeredAt", "")) >= str(
            ledger.get("triggeredAt", "")
        ):
            ledger = dict(remembered)
        if not should_trigger(
            {"rebuild": ledger}, digest, rebuild, drifted=len(result.drifted), now=now
        ):
            return
        same_digest = ledger.get("baseDigest") == digest
        succeeded = list(ledger.get("succeeded") or []) if same_digest else []
        attempts = int(ledger.get("attempts") or 0) + 1 if same_digest else 1
        request = self._request(policy, result, previous, digest)
        kinds = [k for k in rebuild.kinds if k not in succeeded]
        ledger = {
            "baseDigest": digest,
            "trigger": ",".join(kinds),
            "runId": "",
            "outcome": TRIGGERING,
            "message": f"firing {', '.join(kinds)}",
            "triggeredAt": timestamp(now),
            "attempts": attempts,
            "succeeded": succeeded,
        }

        if self._pool is None:
            entry, event = self._fire(policy, body, rebuild, kinds, request, ledger)
            self._remember(uid, policy.name, entry, None)
            result.status["rebuild"] = entry
            result.events.append(event)
            return
        self._remember(uid, policy.name, ledger, None)
        result.status["rebuild"] = ledger

        def in_background() -> None:
            try:
                entry, event = self._fire(policy, body, rebuild, kinds, request, ledger)
            except Exception:  # a trigger that raised: recorded as failed, never lost
                log.exception("rebuild triggers of %s", policy.name)
                entry = {**ledger, "outcome": FAILED, "message": "the trigger raised"}
                event = Event(body, "Warning", "RebuildFailed", entry["message"])
            self._remember(uid, policy.name, entry, event)  # the next check says it
            self.on_done(policy.name)

        self._pool.submit(in_background)

    def close(self) -> None:
        """Stop taking triggers; those firing finish on their own (bounded by timeouts)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _fire(
        self,
        policy: PolicySpec,
        body: Mapping[str, Any],
        rebuild: RebuildSpec,
        kinds: list[str],
        request: RebuildRequest,
        ledger: Mapping[str, Any],
    ) -> tuple[dict[str, Any], Event]:
        outcomes: list[TriggerResult] = []
        for kind in kinds:
            try:
                trigger = self._make_trigger(kind, rebuild, policy)
            except (ImageDriftError, ValueError) as exc:
                outcomes.append(TriggerResult(kind, "", FAILED, f"{kind}: {exc}"))
                continue
            outcomes.append(trigger.trigger(request))
        succeeded = [*ledger["succeeded"], *(o.trigger for o in outcomes if o.ok)]
        failed = [o for o in outcomes if not o.ok]
        entry: dict[str, Any] = {
            **ledger,
            "trigger": ",".join(o.trigger for o in outcomes),
            "runId": ",".join(o.run_id for o in outcomes if o.run_id),
            "outcome": FAILED if failed else TRIGGERED,
            "message": "; ".join(o.message for o in outcomes),
            "succeeded": succeeded,
        }
        if failed:
            message = f"attempt {entry['attempts']}: {entry['message']}"
            return entry, Event(body, "Warning", "RebuildFailed", message)
        return entry, Event(body, "Normal", "RebuildTriggered", entry["message"])

    def _remember(
        self, uid: str, name: str, entry: Mapping[str, Any], answered: Event | None
    ) -> None:
        with self._lock:
            self._fired.pop(uid, None)  # re-inserted as the newest
            self._fired[uid] = (name, dict(entry), answered)
            while len(self._fired) > self._max_remembered:
                del self._fired[next(iter(self._fired))]

    def remembered(self) -> int:
        """How many policies' last triggers are remembered."""
        with self._lock:
            return len(self._fired)

    def forget(self, name: str) -> None:
        """Policy ``name`` was deleted: nothing of it is kept."""
        with self._lock:
            for uid in [u for u, (n, _, _) in self._fired.items() if n == name]:
                del self._fired[uid]

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _request(
        policy: PolicySpec, result: CheckResult, previous: Mapping[str, Any], digest: str
    ) -> RebuildRequest:
        base = result.status.get("base") or {}
        old = str((previous.get("base") or {}).get("digest") or "")
        if old == digest:
            old = str(next(iter(base.get("previousDigests") or []), ""))
        workloads = [dict(w) for w in result.drifted[:MAX_LISTED_WORKLOADS]]
        image = str(base.get("image") or policy.base.image.name)
        tag = str(base.get("tag") or policy.base.tag)
        return RebuildRequest(
            policy=policy.name,
            base_image=f"{image}:{tag}" if tag else image,
            old_base_digest=old,
            new_base_digest=digest,
            workloads=workloads,
        )

    def _secret_value(self, name: str, key: str, what: str) -> bytes:
        if self._secrets is None:
            raise InvalidSpec(f"{what}: no Secret reader configured")
        data = self._secrets.read_secret(name)
        if data is None:
            raise InvalidSpec(f"{what}: Secret {name} does not exist")
        value = data.get(key, b"")
        if not value:
            raise InvalidSpec(f"{what}: Secret {name} has no key {key}")
        return value

    def _default_trigger(self, kind: str, rebuild: RebuildSpec, policy: PolicySpec) -> Trigger:
        if kind == "webhook" and rebuild.webhook is not None:
            hook = rebuild.webhook
            key = self._secret_value(hook.secret_name, hook.secret_key, "rebuild webhook")
            return WebhookTrigger(hook.url, key, verify=self._verify)
        if kind == "acrTask" and rebuild.acr_task is not None:
            from imagedrift.registry.acr import AcrIdentity, build_credential

            task = rebuild.acr_task
            azure = dict(policy.base.azure)
            identity = AcrIdentity.from_spec(azure)
            if identity.type == "anonymous":
                raise InvalidSpec("an anonymous identity cannot schedule ACR Task runs")
            secret = ""
            if identity.type == "servicePrincipal":
                secret = self._secret_value(
                    azure.get("secretName", ""), "clientSecret", identity.description
                ).decode()
            verify = str(self._verify) if isinstance(self._verify, Path) else self._verify
            credential = build_credential(identity, secret, connection_verify=verify)
            assert credential is not None
            return AcrTaskTrigger(
                subscription_id=task.subscription_id,
                resource_group=task.resource_group,
                registry=task.registry,
                task_name=task.task_name,
                credential=credential,
                endpoint=task.endpoint or "https://management.azure.com",
                audience=task.audience,
                connection_verify=self._verify,
            )
        raise InvalidSpec(f"unknown rebuild trigger {kind!r}")

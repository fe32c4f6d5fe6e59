"""Rebuild triggers: ask a build system to rebuild the application images on a new base.

Each trigger has one method, ``trigger(request) -> TriggerResult``, which never raises: a
failure is a result with ``outcome == "Failed"`` and a message saying why.

- ``AcrTaskTrigger`` schedules a run of an existing ACR Task through Azure Resource Manager
  (``registries.begin_schedule_run`` with a ``TaskRunRequest``, API 2019-06-01-preview).
- ``WebhookTrigger`` POSTs a JSON document signed with HMAC-SHA256
  (``X-Imagedrift-Signature: sha256=<hex of HMAC(key, body)>``) to a URL, e.g. a CI
  pipeline's dispatch endpoint. Receivers verify with ``verify_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError

from imagedrift.core.rebuild import FAILED, TRIGGERED

log = logging.getLogger(__name__)
ARM_PUBLIC: Final = "https://management.azure.com"
ACR_TASKS_API: Final = "2019-06-01-preview"
SIGNATURE_HEADER: Final = "X-Imagedrift-Signature"
EVENT_HEADER: Final = "X-Imagedrift-Event"
DELIVERY_HEADER: Final = "X-Imagedrift-Delivery"


@dataclass(frozen=True)
class RebuildRequest:
    """What changed: the policy, its base, the base digests before and after, and the
    drifted workloads (each ``{"workload", "container", "image", "baseDigest"}``)."""

    policy: str
    base_image: str
    old_base_digest: str
    new_base_digest: str
    workloads: Sequence[Mapping[str, str]] = field(default_factory=tuple)

    def document(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "baseImage": self.base_image,
            "oldBaseDigest": self.old_base_digest,
            "newBaseDigest": self.new_base_digest,
            "workloads": [dict(w) for w in self.workloads],
        }


@dataclass(frozen=True)
class TriggerResult:
    trigger: str  # "acrTask" | "webhook"
    run_id: str
    outcome: str  # "Triggered" | "Failed"
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome == TRIGGERED


class Trigger(Protocol):
    name: str

    def trigger(self, request: RebuildRequest) -> TriggerResult:
        """Ask for the rebuild; never raises."""
        ...


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


class AcrTaskTrigger:
    """Schedules a run of ACR Task ``task_name`` in ``registry``.

    ``endpoint`` is the Resource Manager URL (sovereign clouds, tests); ``audience`` the
    token audience (default: the endpoint, i.e. ``https://management.azure.com``).
    ``timeout`` bounds the whole call including the long-running-operation polling.
    """

    name = "acrTask"

    def __init__(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        registry: str,
        task_name: str,
        credential: TokenCredential,
        endpoint: str = ARM_PUBLIC,
        audience: str = "",
        connection_verify: bool | str | Path = True,
        timeout: float = 60.0,
        polling_interval: float = 1.0,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.registry = registry
        self.task_name = task_name
        self.endpoint = (endpoint or ARM_PUBLIC).rstrip("/")
        self.audience = (audience or self.endpoint).rstrip("/")
        self._credential = credential
        self._verify = (
            str(connection_verify) if isinstance(connection_verify, Path) else (connection_verify)
        )
        self._timeout = timeout
        self._polling_interval = polling_interval

    @property
    def task_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.registry}"
            f"/tasks/{self.task_name}"
        )

    def trigger(self, request: RebuildRequest) -> TriggerResult:
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient
        from azure.mgmt.containerregistry.v2019_06_01_preview.models import TaskRunRequest

        what = f"ACR Task {self.registry}/{self.task_name}"
        try:
            with ContainerRegistryManagementClient(
                self._credential,
                self.subscription_id,
                base_url=self.endpoint,
                api_version=ACR_TASKS_API,
                credential_scopes=[f"{self.audience}/.default"],
                connection_verify=self._verify,
                connection_timeout=10,
                read_timeout=30,
                retry_total=2,
                polling_interval=self._polling_interval,
            ) as client:
                poller = client.registries.begin_schedule_run(
                    self.resource_group, self.registry, TaskRunRequest(task_id=self.task_id)
                )
                run = poller.result(timeout=self._timeout)
                if run is None and not poller.done():
                    return TriggerResult(
                        self.name,
                        "",
                        FAILED,
                        f"{what}: the run was not confirmed within {self._timeout:g}s",
                    )
        except HttpResponseError as exc:
            status = exc.status_code or "no response"
            reason = _first_line(exc.message)
            log.warning("%s for %s: %s %s", what, request.policy, status, reason)
            return TriggerResult(self.name, "", FAILED, f"{what}: {status}: {reason}")
        except (AzureError, ValueError, OSError) as exc:
            reason = _first_line(getattr(exc, "message", None) or exc)
            log.warning("%s for %s: %s", what, request.policy, reason)
            return TriggerResult(self.name, "", FAILED, f"{what}: {reason}")
        run_id = str(getattr(run, "run_id", "") or "")
        status = str(getattr(run, "status", "") or "")
        if not run_id:
            return TriggerResult(self.name, "", FAILED, f"{what}: the service returned no run id")
        return TriggerResult(self.name, run_id, TRIGGERED, f"{what}: run {run_id} {status}".strip())


def sign(key: bytes, body: bytes) -> str:
    """The ``X-Imagedrift-Signature`` value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``key`` (constant time)."""
    return hmac.compare_digest(sign(key, body).encode(), header.strip().encode())


class WebhookTrigger:
    """POSTs the signed rebuild request to ``url``. A 2xx answer is success; its JSON
    ``runId`` or ``id`` (when it has one) becomes the run id, else the delivery id."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        key: bytes,
        *,
        verify: bool | str | Path = True,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not key:
            raise ValueError("the webhook signing key is empty")
        self.url = url
        self._key = key
        # A CA bundle path becomes an SSL context (httpx no longer takes paths).
        self._verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=str(verify))
            if isinstance(verify, str | Path)
            else verify
        )
        self._timeout = timeout
        self._transport = transport

    def trigger(self, request: RebuildRequest) -> TriggerResult:
        delivery = str(uuid.uuid4())
        body = json.dumps(
            {**request.document(), "delivery": delivery}, separators=(",", ":"), sort_keys=True
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._key, body),
            EVENT_HEADER: "rebuild",
            DELIVERY_HEADER: delivery,
            "User-Agent": "imagedrift",
        }
        what = f"webhook {_redacted(self.url)}"
        try:
            with httpx.Client(
                verify=self._verify, timeout=self._timeout, transport=self._transport
            ) as client:
                response = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("%s for %s: %s", what, request.policy, exc)
            return TriggerResult(self.name, "", FAILED, f"{what}: {_first_line(exc)}")
        if not response.is_success:
            return TriggerResult(
                self.name, "", FAILED, f"{what}: {response.status_code} {response.reason_phrase}"
            )
        run_id = delivery
        try:
            answer = response.json()
            if isinstance(answer, dict) and (answer.get("runId") or answer.get("id")):
                run_id = str(answer.get("runId") or answer.get("id"))
        except ValueError:
            pass
        return TriggerResult(self.name, run_id, TRIGGERED, f"{what}: {response.status_code}")


def _redacted(url: str) -> str:
    """The URL without its query (dispatch URLs often carry tokens there)."""
    return url.split("?", 1)[0]

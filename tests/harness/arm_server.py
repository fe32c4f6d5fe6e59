"""A local stand-in for Azure Resource Manager's ACR Tasks ``scheduleRun``, and a webhook sink.

``FakeArm`` serves, over TLS with the test CA, what ``azure-mgmt-containerregistry``
(API 2019-06-01-preview) sends for ``registries.begin_schedule_run``:

- ``POST /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/
  registries/{registry}/scheduleRun`` with ``{"type": "TaskRunRequest", "taskId": ...}``,
  authenticated by a bearer token ``FakeEntra`` issued for the ARM audience;
- in ``sync`` mode the answer is ``200`` with the Run; in ``async`` mode it is ``202`` with
  ``Azure-AsyncOperation`` and ``Location``: the operation reports ``InProgress`` for
  ``polls_in_progress`` polls, then ``Succeeded``, and ``Location`` serves the Run, which
  is the long-running-operation protocol the SDK's ARM poller follows.

Every scheduled run is recorded (``runs``); the next requests can be failed on purpose.

``WebhookSink`` is an HTTPS endpoint that records signed rebuild requests and checks their
``X-Imagedrift-Signature`` against its key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.harness.entra import FakeEntra
from tests.harness.tlsca import QuietHandler, TestCA, TlsServer

ARM_AUDIENCE = "https://management.azure.com"
API_VERSION = "2019-06-01-preview"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    task_id: str
    registry: str
    client_id: str  # who scheduled it (the AAD identity)
    request: dict[str, Any]


@dataclass
class _Operation:
    run: dict[str, Any]
    polls: int = 0


def _arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class FakeArm:
    """``scheduleRun`` for registered ACR Tasks on a free 127.0.0.1 HTTPS port; thread-safe."""

    def __init__(self, ca: TestCA, entra: FakeEntra, *, audience: str = ARM_AUDIENCE) -> None:
        self.entra = entra
        self.audience = audience
        self.mode = "sync"
        self.polls_in_progress = 2
        self._lock = threading.Lock()
        self._tasks: set[str] = set()
        self._operations: dict[str, _Operation] = {}
        self._failures: list[tuple[int, dict[str, str]]] = []
        self.runs: list[RunRecord] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._server = TlsServer(_arm_handler(self), ca, name="fake-arm")

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeArm:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._operations.clear()
            self._failures.clear()
            self.runs.clear()
            self.requests.clear()
        self.mode = "sync"
        self.polls_in_progress = 2

    def add_task(self, subscription: str, resource_group: str, registry: str, task: str) -> str:
        """Register a task; returns its resource id (what ``taskId`` must be)."""
        task_id = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
            f"Microsoft.ContainerRegistry/registries/{registry}/tasks/{task}"
        )
        with self._lock:
            self._tasks.add(task_id.lower())
        return task_id

    def fail_next(self, status: int, count: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``count`` scheduleRun requests with ``status``."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}))] * count)

    def runs_for(self, task_id: str) -> list[RunRecord]:
        with self._lock:
            return [r for r in self.runs if r.task_id.lower() == task_id.lower()]

    # -- handlers' helpers ---------------------------------------------------------------
    def _note(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))

    def _take_failure(self) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _schedule(
        self, registry_path: str, registry: str, body: dict[str, Any], client: str
    ) -> tuple[int, dict[str, Any]]:
        if body.get("type") != "TaskRunRequest" or not isinstance(body.get("taskId"), str):
            return 400, _arm_error("InvalidRequestContent", "expected a TaskRunRequest with taskId")
        task_id = str(body["taskId"])
        with self._lock:
            known = task_id.lower() in self._tasks
            if known:
                run_id = f"ca{len(self.runs) + 1}"
                self.runs.append(RunRecord(run_id, task_id, registry, client, body))
        if not known:
            return 404, _arm_error("ResourceNotFound", f"task {task_id} not found")
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        run = {
            "id": f"{registry_path}/runs/{run_id}",
            "type": "Microsoft.ContainerRegistry/registries/runs",
            "name": run_id,
            "properties": {
                "runId": run_id,
                "status": "Queued",
                "runType": "QuickRun",
                "createTime": now,
                "task": task_id.rsplit("/", 1)[-1],
                "provisioningState": "Succeeded",
                "isArchiveEnabled": False,
            },
        }
        return 200, run


def _arm_handler(arm: FakeArm) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def _client(self) -> str | None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            issued = arm.entra.validate(token.strip(), arm.audience) if scheme == "Bearer" else None
            return issued.client_id if issued else None

        def _unauthorized(self, path: str) -> None:
            arm._note(self.command, path, 401)
            self.send_json(
                401,
                _arm_error("InvalidAuthenticationToken", "The access token is invalid."),
                headers={
                    "WWW-Authenticate": (
                        f'Bearer authorization_uri="{arm.entra.url}", error="invalid_token"'
                    )
                },
            )

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body_bytes = self.read_body()
            client = self._client()
            if client is None:
                self._unauthorized(parts.path)
                return
            segments = parts.path.strip("/").split("/")
            if len(segments) != 9 or segments[-1] != "scheduleRun":
                arm._note("POST", parts.path, 404)
                self.send_json(404, _arm_error("NotFound", "no such operation"))
                return
            if f"api-version={API_VERSION}" not in parts.query:
                arm._note("POST", parts.path, 400)
                self.send_json(400, _arm_error("InvalidApiVersion", parts.query))
                return
            failure = arm._take_failure()
            if failure is not None:
                arm._note("POST", parts.path, failure[0])
                self.send_json(
                    failure[0], _arm_error("Injected", "injected failure"), headers=failure[1]
                )
                return
            try:
                body = json.loads(body_bytes)
            except ValueError:
                arm._note("POST", parts.path, 400)
                self.send_json(400, _arm_error("InvalidRequestContent", "not JSON"))
                return
            registry_path = "/" + "/".join(segments[:-1])
            status, payload = arm._schedule(registry_path, segments[7], body, client)
            if status != 200 or arm.mode == "sync":
                arm._note("POST", parts.path, status)
                self.send_json(status, payload)
                return
            operation = uuid.uuid4().hex
            with arm._lock:
                arm._operations[operation] = _Operation(payload)
            base = f"{arm.url}{registry_path}"
            arm._note("POST", parts.path, 202)
            self.send_bytes(
                202,
                b"",
                headers={
                    "Azure-AsyncOperation": (
                        f"{base}/operationStatuses/{operation}?api-version={API_VERSION}"
                    ),
                    "Location": f"{base}/operationResults/{operation}?api-version={API_VERSION}",
                    "Retry-After": "0",
                },
            )

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if self._client() is None:
                self._unauthorized(parts.path)
                return
            segments = parts.path.strip("/").split("/")
            kind, operation = (segments[-2], segments[-1]) if len(segments) >= 2 else ("", "")
            with arm._lock:
                found = arm._operations.get(operation)
                if found is not None and kind == "operationStatuses":
                    found.polls += 1
                    done = found.polls > arm.polls_in_progress
            if found is None or kind not in ("operationStatuses", "operationResults"):
                arm._note("GET", parts.path, 404)
                self.send_json(404, _arm_error("NotFound", "no such operation"))
                return
            arm._note("GET", parts.path, 200)
            if kind == "operationStatuses":
                self.send_json(
                    200,
                    {"status": "Succeeded" if done else "InProgress"},
                    headers={"Retry-After": "0"},
                )
                return
            self.send_json(200, found.run)

    return Handler


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class WebhookSink:
    """Records POSTed rebuild requests and verifies ``X-Imagedrift-Signature`` with ``key``.

    Answers 202 ``{"runId": "sink-N"}`` for a good signature, 401 for a bad one, or what
    ``fail_next`` asked for."""

    def __init__(self, ca: TestCA, key: bytes) -> None:
        self.key = key
        self._lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self._failures: list[int] = []
        self._server = TlsServer(_sink_handler(self), ca, name="webhook-sink")

    @property
    def url(self) -> str:
        return f"{self._server.url}/dispatch"

    def start(self) -> WebhookSink:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        with self._lock:
            self.deliveries.clear()
            self._failures.clear()

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def verify(self, body: bytes, header: str) -> bool:
        expected = "sha256=" + hmac.new(self.key, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), header.encode())


def _sink_handler(sink: WebhookSink) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            ok = sink.verify(body, self.headers.get("X-Imagedrift-Signature", ""))
            with sink._lock:
                sink.deliveries.append(Delivery(dict(self.headers.items()), body, ok))
                count = len(sink.deliveries)
                failure = sink._failures.pop(0) if sink._failures else None
            if failure is not None:
                self.send_json(failure, {"error": "injected"})
            elif not ok:
                self.send_json(401, {"error": "bad signature"})
            else:
                self.send_json(202, {"runId": f"sink-{count}"})

    return Handler

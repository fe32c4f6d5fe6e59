"""The push-event receiver over real HTTPS sockets: every envelope, both handshakes, and
what it refuses. ``on_push`` records what each delivery named."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from imagedrift.events import MAX_BODY, Receiver, start_receiver
from tests.harness.tlsca import TestCA

SECRET = "s3cret-for-tests"
HOST = "myregistry.azurecr.io"
DIGEST = "sha256:" + "ab" * 32


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, refs: list[str]) -> None:
        with self.lock:
            self.calls.append(refs)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def receiver(acr_tls: TestCA, recorder: Recorder) -> Iterator[Receiver]:
    running = start_receiver(
        host="127.0.0.1",
        port=0,
        secret=SECRET,
        on_push=recorder,
        certfile=str(acr_tls.server_cert),
        keyfile=str(acr_tls.server_key),
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def http(acr_tls: TestCA, receiver: Receiver) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"https://127.0.0.1:{receiver.port}", verify=acr_tls.client_context(), timeout=10
    ) as client:
        yield client


AUTH = {"Authorization": f"Bearer {SECRET}"}


def acr_webhook(action: str = "push", *, tag: str | None = "3.12", **target: Any) -> dict[str, Any]:
    body_target: dict[str, Any] = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "size": 524,
        "digest": DIGEST,
        "length": 524,
        "repository": "base/python",
        **target,
    }
    if tag is not None:
        body_target["tag"] = tag
    return {
        "id": "cb8c3971-9adc-488b-bdd8-43cbb4974ff5",
        "timestamp": "2025-01-02T03:04:05.0000000Z",
        "action": action,
        "target": body_target,
        "request": {
            "id": "3cbb6949-7549-4fa1-86cd-a6d5451dffc7",
            "host": HOST,
            "method": "PUT",
            "useragent": "docker/27",
        },
    }


def grid_event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "topic": "/subscriptions/sub/resourceGroups/rg/providers/"
        "Microsoft.ContainerRegistry/registries/myregistry",
        "subject": "base/python:3.12",
        "eventType": event_type,
        "eventTime": "2025-01-02T03:04:05.123Z",
        "data": data,
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }


def cloud_event(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": event_type,
        "source": "/subscriptions/sub/resourceGroups/rg/providers/"
        "Microsoft.ContainerRegistry/registries/myregistry",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "time": "2025-01-02T03:04:05.123Z",
        "subject": "base/python:3.12",
        "datacontenttype": "application/json",
        "data": data,
    }


PUSH_DATA = {k: v for k, v in acr_webhook().items() if k in ("id", "timestamp", "action")} | {
    "target": acr_webhook()["target"],
    "request": acr_webhook()["request"],
}


@pytest.mark.parametrize(
    ("label", "body", "content_type", "expected"),
    [
        ("acr push", acr_webhook(), "application/json", [f"{HOST}/base/python:3.12"]),
        (
            "acr push without tag",
            acr_webhook(tag=None),
            "application/json",
            [f"{HOST}/base/python@{DIGEST}"],
        ),
        (
            "acr delete",
            acr_webhook("delete", tag=None),
            "application/json",
            [f"{HOST}/base/python@{DIGEST}"],
        ),
        (
            "event grid push",
            [grid_event("Microsoft.ContainerRegistry.ImagePushed", PUSH_DATA)],
            "application/json",
            [f"{HOST}/base/python:3.12"],
        ),
        (
            "event grid batch",
            [
                grid_event("Microsoft.ContainerRegistry.ImagePushed", PUSH_DATA),
                grid_event(
                    "Microsoft.ContainerRegistry.ImagePushed",
                    {
                        **PUSH_DATA,
                        "target": {**PUSH_DATA["target"], "repository": "base/node", "tag": "22"},
                    },
                ),
                grid_event("Microsoft.ContainerRegistry.ChartPushed", PUSH_DATA),
            ],
            "application/json",
            [f"{HOST}/base/python:3.12", f"{HOST}/base/node:22"],
        ),
        (
            "cloudevent",
            cloud_event("Microsoft.ContainerRegistry.ImagePushed", PUSH_DATA),
            "application/cloudevents+json; charset=utf-8",
            [f"{HOST}/base/python:3.12"],
        ),
        (
            "cloudevents batch",
            [
                cloud_event(
                    "Microsoft.ContainerRegistry.ImageDeleted",
                    {**PUSH_DATA, "target": {"repository": "base/python", "digest": DIGEST}},
                )
            ],
            "application/cloudevents-batch+json",
            [f"{HOST}/base/python@{DIGEST}"],
        ),
        (
            "distribution envelope",
            {
                "events": [
                    {
                        "action": "push",
                        "target": {
                            "mediaType": "application/vnd.oci.image.config.v1+json",
                            "repository": "base/python",
                            "digest": "sha256:" + "cd" * 32,
                        },
                        "request": {"host": "registry.local:5000"},
                    },
                    {
                        "action": "push",
                        "target": {
                            "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "repository": "base/python",
                            "tag": "3.12",
                            "digest": DIGEST,
                        },
                        "request": {"host": "registry.local:5000"},
                    },
                    {"action": "pull", "target": {"repository": "base/python", "tag": "3.12"}},
                ]
            },
            "application/vnd.docker.distribution.events.v1+json",
            ["registry.local:5000/base/python:3.12"],
        ),
    ],
)
def test_each_form_calls_on_push_with_its_refs(
    label: str,
    body: Any,
    content_type: str,
    expected: list[str],
    http: httpx.Client,
    recorder: Recorder,
) -> None:
    response = http.post(
        "/", content=json.dumps(body), headers={**AUTH, "Content-Type": content_type}
    )
    assert response.status_code == 200, (label, response.text)
    assert response.json()["accepted"] == len(expected)
    assert recorder.calls == [expected], label


def test_cloudevent_in_binary_mode(http: httpx.Client, recorder: Recorder) -> None:
    response = http.post(
        "/events",
        content=json.dumps(PUSH_DATA),
        headers={
            **AUTH,
            "ce-specversion": "1.0",
            "ce-type": "Microsoft.ContainerRegistry.ImagePushed",
            "ce-source": "/subscriptions/sub",
            "ce-id": "1",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200
    assert recorder.calls == [[f"{HOST}/base/python:3.12"]]


def test_ping_is_accepted_without_a_callback(http: httpx.Client, recorder: Recorder) -> None:
    response = http.post("/", json=acr_webhook("ping", tag=None), headers=AUTH)
    assert response.status_code == 200 and response.json() == {"accepted": 0, "ignored": 1}
    assert recorder.calls == []


def test_event_grid_validation_handshake_echoes_the_code(
    http: httpx.Client, recorder: Recorder
) -> None:
    event = grid_event(
        "Microsoft.EventGrid.SubscriptionValidationEvent",
        {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"},
    )
    response = http.post(
        f"/?token={SECRET}", json=[event], headers={"aeg-event-type": "SubscriptionValidation"}
    )
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert recorder.calls == []


def test_cloudevents_abuse_protection_handshake(http: httpx.Client) -> None:
    response = http.options(
        f"/?token={SECRET}",
        headers={"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"},
    )
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    refused = http.options("/", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert refused.status_code == 401 and "WebHook-Allowed-Origin" not in refused.headers


@pytest.mark.parametrize(
    "credentials",
    [
        {"headers": {"Authorization": f"Bearer {SECRET}"}},
        {"headers": {"X-Imagedrift-Token": SECRET}},
        {"params": {"token": SECRET}},
    ],
    ids=["bearer", "custom-header", "query"],
)
def test_each_way_of_carrying_the_secret(
    credentials: dict[str, Any], http: httpx.Client, recorder: Recorder
) -> None:
    response = http.post("/", json=acr_webhook(), **credentials)
    assert response.status_code == 200
    assert recorder.calls == [[f"{HOST}/base/python:3.12"]]


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"headers": {"Authorization": "Bearer wrong"}},
        {"headers": {"Authorization": f"Basic {SECRET}"}},
        {"headers": {"X-Imagedrift-Token": SECRET[:-1]}},
        {"params": {"token": SECRET + "x"}},
    ],
    ids=["none", "wrong-bearer", "not-bearer", "short-header", "long-query"],
)
def test_unauthenticated_deliveries_get_401(
    credentials: dict[str, Any], http: httpx.Client, recorder: Recorder
) -> None:
    response = http.post("/", json=acr_webhook(), **credentials)
    assert response.status_code == 401
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"", "empty body"),
        (b"42", "neither a JSON object"),
        (b"[]", "empty event array"),
        (b'{"hello": "world"}', "not an ACR webhook"),
        (json.dumps({"action": "push", "target": {"tag": "1"}}).encode(), "target.repository"),
        (json.dumps({"action": "push", "target": {"repository": "a"}}).encode(), "neither tag"),
        (json.dumps(acr_webhook(repository="UPPER/Case")).encode(), "push event"),
        (
            json.dumps(
                [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]
            ).encode(),
            "validationCode",
        ),
        (json.dumps({"specversion": "0.3", "type": "x"}).encode(), "specversion"),
        (json.dumps([1, 2]).encode(), "other than objects"),
    ],
)
def test_malformed_deliveries_get_400_with_the_reason(
    body: bytes,
    reason: str,
    http: httpx.Client,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="imagedrift.events"):
        response = http.post(
            "/", content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert any(reason in r.getMessage() for r in caplog.records)
    assert recorder.calls == []


def test_body_size_is_bounded(http: httpx.Client, recorder: Recorder) -> None:
    response = http.post("/", content=b" " * (MAX_BODY + 1), headers=AUTH)
    assert response.status_code == 413
    assert recorder.calls == []


def test_a_failing_callback_answers_500_so_the_sender_retries(acr_tls: TestCA) -> None:
    def broken(refs: list[str]) -> None:
        raise RuntimeError("boom")

    running = start_receiver(
        host="127.0.0.1",
        port=0,
        secret=SECRET,
        on_push=broken,
        certfile=str(acr_tls.server_cert),
        keyfile=str(acr_tls.server_key),
    )
    try:
        response = httpx.post(
            f"https://127.0.0.1:{running.port}/",
            json=acr_webhook(),
            headers=AUTH,
            verify=acr_tls.client_context(),
        )
        assert response.status_code == 500
    finally:
        running.stop()


def test_other_methods_and_health(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/", headers=AUTH).status_code == 405
    assert http.put("/", headers=AUTH, content=b"{}").status_code == 405
    assert http.delete("/").status_code == 401


def test_plain_http_only_when_asked_and_tls_is_real(acr_tls: TestCA, receiver: Receiver) -> None:
    assert receiver.tls
    with pytest.raises(httpx.HTTPError):  # an untrusted client is refused by the handshake
        httpx.post(f"https://127.0.0.1:{receiver.port}/", json=acr_webhook(), headers=AUTH)
    calls: list[list[str]] = []
    plain = start_receiver(
        host="127.0.0.1", port=0, secret=SECRET, on_push=calls.append, certfile=None, keyfile=None
    )
    try:
        assert not plain.tls
        response = httpx.post(f"http://127.0.0.1:{plain.port}/", json=acr_webhook(), headers=AUTH)
        assert response.status_code == 200 and calls == [[f"{HOST}/base/python:3.12"]]
    finally:
        plain.stop()
    with pytest.raises(ValueError, match="secret"):
        start_receiver(
            host="127.0.0.1", port=0, secret="", on_push=calls.append, certfile=None, keyfile=None
        )
    with pytest.raises(ValueError, match="both"):
        start_receiver(
            host="127.0.0.1",
            port=0,
            secret=SECRET,
            on_push=calls.append,
            certfile=str(acr_tls.server_cert),
            keyfile=None,
        )


def test_stop_closes_the_port(acr_tls: TestCA) -> None:
    running = start_receiver(
        host="127.0.0.1",
        port=0,
        secret=SECRET,
        on_push=lambda refs: None,
        certfile=str(acr_tls.server_cert),
        keyfile=str(acr_tls.server_key),
    )
    port = running.port
    running.stop()
    running.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{port}/healthz", verify=acr_tls.client_context(), timeout=2)


def test_no_log_line_carries_the_query_string_token(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """At every level, DEBUG included: http.server logs the request line, and the token
    form the README documents puts the secret in its query string."""
    import logging

    from imagedrift.events.server import redact

    caplog.set_level(logging.DEBUG, logger="imagedrift")
    for token in (SECRET, "wrong-guess-123"):
        http.post(f"/events?token={token}&x=1", content=b"{}")
        http.get(f"/anything?token={token}")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /events?<redacted>" in text, text
    assert SECRET not in text and "wrong-guess-123" not in text
    assert redact('"GET /a?token=s3cret HTTP/1.1" 401 -') == '"GET /a?<redacted> HTTP/1.1" 401 -'

"""Rebuild triggers against real servers: the ACR Task trigger through the real
``azure-mgmt-containerregistry`` and ``azure-identity`` to the fake Resource Manager and
Entra ID over TLS, and the signed webhook to an HTTPS sink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.identity import ClientSecretCredential

from imagedrift.core.conditions import Condition
from imagedrift.core.spec import parse_policy
from imagedrift.engine.check import CheckResult
from imagedrift.engine.rebuild_step import MAX_LISTED_WORKLOADS, RebuildStep
from imagedrift.errors import InvalidSpec
from imagedrift.rebuild import (
    MAX_ATTEMPTS,
    AcrTaskTrigger,
    RebuildRequest,
    WebhookTrigger,
    parse_rebuild,
    retry_delay,
    should_trigger,
    verify_signature,
)
from tests.harness.arm_server import ARM_AUDIENCE, FakeArm, WebhookSink
from tests.harness.fixtures_acr import AcrIdentities
from tests.harness.fixtures_arm import SINK_KEY
from tests.harness.tlsca import TestCA

SUB, RG, REGISTRY, TASK = "00000000-1111-2222-3333-444444444444", "rg-apps", "myregistry", "app"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
REQUEST = RebuildRequest(
    policy="py",
    base_image="myregistry.azurecr.io/base/python:3.12",
    old_base_digest=D1,
    new_base_digest=D2,
    workloads=[{"workload": "apps/v1/Deployment/shop/web", "container": "app"}],
)
ACR_SPEC = {"subscriptionId": SUB, "resourceGroup": RG, "registry": REGISTRY, "taskName": TASK}


def ledger(digest: str, outcome: str, attempts: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "rebuild": {
            "baseDigest": digest,
            "outcome": outcome,
            "attempts": attempts,
            "triggeredAt": "2025-01-02T03:04:05Z",
            **extra,
        }
    }


REBUILD = {"rebuild": {"acrTask": ACR_SPEC}}


@pytest.mark.parametrize(
    ("label", "previous", "digest", "spec", "drifted", "now", "expected"),
    [
        ("no trigger configured", {}, D2, {}, 1, NOW, False),
        ("nothing drifted", {}, D2, REBUILD, 0, NOW, False),
        ("no digest seen", {}, "", REBUILD, 1, NOW, False),
        ("first drift", {}, D2, REBUILD, 1, NOW, True),
        ("base moved since last trigger", ledger(D1, "Triggered"), D2, REBUILD, 2, NOW, True),
        ("already triggered for digest", ledger(D2, "Triggered"), D2, REBUILD, 1, NOW, False),
        ("failed, backoff not over", ledger(D2, "Failed"), D2, REBUILD, 1, NOW, False),
        (
            "failed, backoff over",
            ledger(D2, "Failed"),
            D2,
            REBUILD,
            1,
            NOW + timedelta(seconds=retry_delay(1)),
            True,
        ),
        (
            "failed too often",
            ledger(D2, "Failed", MAX_ATTEMPTS),
            D2,
            REBUILD,
            1,
            NOW + timedelta(days=1),
            False,
        ),
        (
            "failed but every trigger already succeeded",
            ledger(D2, "Failed", succeeded=["acrTask"]),
            D2,
            REBUILD,
            1,
            NOW + timedelta(days=1),
            False,
        ),
    ],
)
def test_should_trigger(
    label: str,
    previous: dict[str, Any],
    digest: str,
    spec: dict[str, Any],
    drifted: int,
    now: datetime,
    expected: bool,
) -> None:
    rebuild = parse_rebuild(spec.get("rebuild"))
    assert should_trigger(previous, digest, rebuild, drifted=drifted, now=now) is expected, label


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [60.0, 120.0, 240.0]
    assert retry_delay(20) == 3600.0


def _credential(
    ids: AcrIdentities, ca: TestCA, secret: str | None = None
) -> ClientSecretCredential:
    return ClientSecretCredential(
        ids.tenant_id,
        ids.sp_client_id,
        secret or ids.sp_secret,
        authority=ids.authority,
        disable_instance_discovery=True,
        connection_verify=str(ca.ca_cert),
    )


def _trigger(arm: FakeArm, ids: AcrIdentities, ca: TestCA, **options: Any) -> AcrTaskTrigger:
    return AcrTaskTrigger(
        subscription_id=SUB,
        resource_group=RG,
        registry=REGISTRY,
        task_name=TASK,
        credential=options.pop("credential", None) or _credential(ids, ca),
        endpoint=arm.url,
        audience=ARM_AUDIENCE,
        connection_verify=str(ca.ca_cert),
        polling_interval=0.05,
        **options,
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_acr_task_trigger_schedules_a_run(
    mode: str, fake_arm: FakeArm, acr_identities: AcrIdentities, acr_tls: TestCA
) -> None:
    task_id = fake_arm.add_task(SUB, RG, REGISTRY, TASK)
    fake_arm.mode = mode
    result = _trigger(fake_arm, acr_identities, acr_tls).trigger(REQUEST)
    assert (result.trigger, result.outcome, result.run_id) == ("acrTask", "Triggered", "ca1")
    assert "run ca1 Queued" in result.message
    runs = fake_arm.runs_for(task_id)
    assert [(r.run_id, r.client_id) for r in runs] == [("ca1", acr_identities.sp_client_id)]
    assert runs[0].request == {
        "type": "TaskRunRequest",
        "taskId": task_id,
        "isArchiveEnabled": False,
    }
    polls = [p for m, p, _ in fake_arm.requests if m == "GET"]
    if mode == "async":  # the SDK followed the long-running operation to its end
        assert len([p for p in polls if "operationStatuses" in p]) == fake_arm.polls_in_progress + 1
        assert any("operationResults" in p for p in polls)
    else:
        assert polls == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("unknown-task", "404"),
        ("wrong-secret", "Invalid client secret"),
        ("server-error", "500"),
    ],
)
def test_acr_task_trigger_failures_are_results(
    setup: str, expected: str, fake_arm: FakeArm, acr_identities: AcrIdentities, acr_tls: TestCA
) -> None:
    options: dict[str, Any] = {}
    if setup != "unknown-task":
        fake_arm.add_task(SUB, RG, REGISTRY, TASK)
    if setup == "wrong-secret":
        options["credential"] = _credential(acr_identities, acr_tls, secret="wrong")
    if setup == "server-error":
        fake_arm.fail_next(500, count=5)
    result = _trigger(fake_arm, acr_identities, acr_tls, **options).trigger(REQUEST)
    assert result.outcome == "Failed" and result.run_id == ""
    assert expected in result.message, result.message
    assert fake_arm.runs == []


def test_webhook_trigger_signs_its_body(webhook_sink: WebhookSink, acr_tls: TestCA) -> None:
    trigger = WebhookTrigger(webhook_sink.url, SINK_KEY, verify=acr_tls.ca_cert)
    result = trigger.trigger(REQUEST)
    assert (result.trigger, result.outcome, result.run_id) == ("webhook", "Triggered", "sink-1")
    [delivery] = webhook_sink.deliveries
    assert delivery.signature_ok
    assert verify_signature(SINK_KEY, delivery.body, delivery.headers["X-Imagedrift-Signature"])
    assert not verify_signature(
        b"other key", delivery.body, delivery.headers["X-Imagedrift-Signature"]
    )
    document = delivery.json()
    assert (document["policy"], document["baseImage"]) == ("py", REQUEST.base_image)
    assert (document["oldBaseDigest"], document["newBaseDigest"]) == (D1, D2)
    assert document["workloads"] == [
        {"workload": "apps/v1/Deployment/shop/web", "container": "app"}
    ]
    assert delivery.headers["X-Imagedrift-Delivery"] == document["delivery"]

    wrong = WebhookTrigger(webhook_sink.url, b"not the sink's key", verify=acr_tls.ca_cert)
    refused = wrong.trigger(REQUEST)
    assert refused.outcome == "Failed" and "401" in refused.message


# -- the hook: once per base digest, failures recorded and retried ---------------------------


class Secrets:
    def __init__(self, data: dict[str, dict[str, bytes]]) -> None:
        self.data = data
        self.reads = 0

    def read_secret(self, name: str) -> dict[str, bytes] | None:
        self.reads += 1
        return self.data.get(name)


def _policy_body(
    spec_rebuild: dict[str, Any], azure: dict[str, Any], status: dict[str, Any]
) -> dict[str, Any]:
    return {
        "metadata": {"name": "py", "uid": "uid-1", "generation": 1},
        "spec": {
            "base": {
                "image": "myregistry.azurecr.io/base/python",
                "tag": "3.12",
                "provider": "azure",
                "azure": azure,
            },
            "rebuild": spec_rebuild,
        },
        "status": status,
    }


def _result(digest: str, drifted: int, ready: bool = True) -> CheckResult:
    items = [
        {
            "workload": f"apps/v1/Deployment/shop/w{i}",
            "container": "app",
            "state": "Drifted",
            "image": "x",
            "baseDigest": D1,
        }
        for i in range(drifted)
    ]
    status = {
        "base": {
            "image": "myregistry.azurecr.io/base/python",
            "tag": "3.12",
            "digest": digest,
            "previousDigests": [D1],
        },
        # As the checker writes it: at most 50 items listed.
        "workloads": {"drifted": drifted, "items": items[:50]},
    }
    listed = [
        {k: str(i[k]) for k in ("workload", "container", "image", "baseDigest")} for i in items
    ]
    return CheckResult(
        status, [Condition("Ready", ready, "WaitingForRebuild", "")], [], 60.0, drifted=listed
    )


def _run_checks(
    hook: RebuildStep, body: dict[str, Any], checks: list[tuple[str, int, datetime]]
) -> list[CheckResult]:
    """Apply the hook to consecutive checks, writing status.rebuild back as kopf would."""
    results = []
    for digest, drifted, now in checks:
        policy = parse_policy("py", body["spec"])
        result = _result(digest, drifted)
        hook.apply(policy, body, result, now)
        if "rebuild" in result.status:
            body["status"]["rebuild"] = result.status["rebuild"]
        results.append(result)
    return results


def test_exactly_one_run_per_base_digest(
    fake_arm: FakeArm, webhook_sink: WebhookSink, acr_identities: AcrIdentities, acr_tls: TestCA
) -> None:
    task_id = fake_arm.add_task(SUB, RG, REGISTRY, TASK)
    secrets = Secrets(
        {"sp": {"clientSecret": acr_identities.sp_secret.encode()}, "hook": {"hmacKey": SINK_KEY}}
    )
    hook = RebuildStep(secrets, verify=str(acr_tls.ca_cert))
    azure = {**acr_identities.spec("servicePrincipal"), "secretRef": {"name": "sp"}}
    rebuild = {
        "acrTask": {**ACR_SPEC, "endpoint": fake_arm.url, "audience": ARM_AUDIENCE},
        "webhook": {"url": webhook_sink.url, "secretRef": {"name": "hook"}},
    }
    body = _policy_body(rebuild, azure, {})
    later = [NOW + timedelta(minutes=m) for m in range(8)]
    results = _run_checks(
        hook,
        body,
        [
            (D1, 0, later[0]),
            (D1, 2, later[1]),
            (D1, 2, later[2]),
            (D1, 2, later[3]),
            (D2, 1, later[4]),
            (D2, 1, later[5]),
            (D2, 0, later[6]),
            (D2, 1, later[7]),
        ],
    )
    assert [r.run_id for r in fake_arm.runs_for(task_id)] == ["ca1", "ca2"]
    assert len(webhook_sink.deliveries) == 2 and all(
        d.signature_ok for d in webhook_sink.deliveries
    )
    assert [d.json()["newBaseDigest"] for d in webhook_sink.deliveries] == [D1, D2]
    fired = [r for r in results if r.events]
    assert [(e.type, e.reason) for r in fired for e in r.events] == [
        ("Normal", "RebuildTriggered"),
        ("Normal", "RebuildTriggered"),
    ]
    entry = body["status"]["rebuild"]
    assert entry["baseDigest"] == D2 and entry["outcome"] == "Triggered"
    assert entry["trigger"] == "acrTask,webhook" and entry["runId"] == "ca2,sink-2"
    assert entry["succeeded"] == ["acrTask", "webhook"] and entry["attempts"] == 1
    assert entry["triggeredAt"] == "2025-01-02T03:08:05Z"

    # A stale body (status not yet written) does not fire again: the hook remembers.
    stale = _policy_body(rebuild, azure, {})
    result = _result(D2, 1)
    hook.apply(parse_policy("py", stale["spec"]), stale, result, later[7])
    assert "rebuild" not in result.status and len(fake_arm.runs) == 2


def test_a_failed_trigger_is_recorded_and_retried_with_backoff_only_where_it_failed(
    fake_arm: FakeArm, webhook_sink: WebhookSink, acr_identities: AcrIdentities, acr_tls: TestCA
) -> None:
    task_id = fake_arm.add_task(SUB, RG, REGISTRY, TASK)
    secrets = Secrets(
        {"sp": {"clientSecret": acr_identities.sp_secret.encode()}, "hook": {"hmacKey": SINK_KEY}}
    )
    hook = RebuildStep(secrets, verify=str(acr_tls.ca_cert))
    azure = {**acr_identities.spec("servicePrincipal"), "secretRef": {"name": "sp"}}
    rebuild = {
        "acrTask": {**ACR_SPEC, "endpoint": fake_arm.url, "audience": ARM_AUDIENCE},
        "webhook": {"url": webhook_sink.url, "secretRef": {"name": "hook"}},
    }
    body = _policy_body(rebuild, azure, {})
    webhook_sink.fail_next(503, count=2)
    first = _run_checks(hook, body, [(D2, 1, NOW)])[0]
    entry = body["status"]["rebuild"]
    assert entry["outcome"] == "Failed" and entry["attempts"] == 1
    assert entry["succeeded"] == ["acrTask"] and "503" in entry["message"]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "RebuildFailed")]

    # Within the backoff nothing fires; after it only the webhook is retried.
    soon = NOW + timedelta(seconds=retry_delay(1) - 1)
    retry_at = NOW + timedelta(seconds=retry_delay(1))
    _run_checks(hook, body, [(D2, 1, soon)])
    assert len(webhook_sink.deliveries) == 1
    _run_checks(hook, body, [(D2, 1, retry_at)])  # fails again (second injected 503)
    assert body["status"]["rebuild"]["attempts"] == 2
    _run_checks(hook, body, [(D2, 1, retry_at + timedelta(seconds=retry_delay(2)))])
    entry = body["status"]["rebuild"]
    assert entry["outcome"] == "Triggered" and entry["attempts"] == 3
    assert entry["succeeded"] == ["acrTask", "webhook"]
    assert len(fake_arm.runs_for(task_id)) == 1, "the ACR Task that started was not run twice"
    assert len(webhook_sink.deliveries) == 3
    _run_checks(hook, body, [(D2, 1, retry_at + timedelta(days=1))])
    assert len(webhook_sink.deliveries) == 3 and len(fake_arm.runs) == 1


def test_a_missing_secret_fails_the_trigger_with_a_reason(
    fake_arm: FakeArm, webhook_sink: WebhookSink
) -> None:
    hook = RebuildStep(Secrets({}), verify=True)
    rebuild = {"webhook": {"url": webhook_sink.url, "secretRef": {"name": "absent"}}}
    body = _policy_body(rebuild, {}, {})
    _run_checks(hook, body, [(D2, 1, NOW)])
    entry = body["status"]["rebuild"]
    assert entry["outcome"] == "Failed"
    assert "Secret absent does not exist" in entry["message"]
    assert webhook_sink.deliveries == []


def test_an_acr_task_with_an_anonymous_identity_is_an_invalid_spec() -> None:
    """Once a warning in the log at every check (the spec was parsed after the check, and
    the policy looked healthy) and a failed trigger retried five times; now the policy
    goes Stalled with the field named, like any other spec error."""
    body = _policy_body({"acrTask": ACR_SPEC}, {"identity": "anonymous"}, {})
    with pytest.raises(InvalidSpec, match=r"spec\.rebuild\.acrTask: .*anonymous identity"):
        parse_policy("py", body["spec"])
    with pytest.raises(InvalidSpec, match=r"spec\.rebuild\.webhook needs url"):
        parse_policy("py", _policy_body({"webhook": {"url": ""}}, {}, {})["spec"])


def test_a_failed_check_triggers_nothing(webhook_sink: WebhookSink, acr_tls: TestCA) -> None:
    hook = RebuildStep(Secrets({"hook": {"hmacKey": SINK_KEY}}), verify=str(acr_tls.ca_cert))
    body = _policy_body(
        {"webhook": {"url": webhook_sink.url, "secretRef": {"name": "hook"}}}, {}, {}
    )
    result = _result(D2, 3, ready=False)
    hook.apply(parse_policy("py", body["spec"]), body, result, NOW)
    assert "rebuild" not in result.status and webhook_sink.deliveries == []
    assert json.dumps(result.status)  # still plain data


def test_the_request_lists_every_drifted_workload_up_to_its_own_bound(
    webhook_sink: WebhookSink, acr_tls: TestCA
) -> None:
    """The request was built from the status list, which holds at most 50 items (and may
    be trimmed to fit the status budget), so its own bound of 100 was never reached; it is
    built from the check's decisions now (``CheckResult.drifted``)."""
    hook = RebuildStep(Secrets({"hook": {"hmacKey": SINK_KEY}}), verify=str(acr_tls.ca_cert))
    body = _policy_body(
        {"webhook": {"url": webhook_sink.url, "secretRef": {"name": "hook"}}}, {}, {}
    )
    hook.apply(parse_policy("py", body["spec"]), body, _result(D2, 120), NOW)
    [delivery] = webhook_sink.deliveries
    listed = [w["workload"] for w in delivery.json()["workloads"]]
    assert len(listed) == MAX_LISTED_WORKLOADS == 100
    assert listed == [f"apps/v1/Deployment/shop/w{i}" for i in range(100)]


def test_a_deleted_policy_is_forgotten(webhook_sink: WebhookSink, acr_tls: TestCA) -> None:
    hook = RebuildStep(Secrets({"hook": {"hmacKey": SINK_KEY}}), verify=str(acr_tls.ca_cert))
    body = _policy_body(
        {"webhook": {"url": webhook_sink.url, "secretRef": {"name": "hook"}}}, {}, {}
    )
    hook.apply(parse_policy("py", body["spec"]), body, _result(D2, 1), NOW)
    assert hook.remembered() == 1
    hook.forget("py")
    assert hook.remembered() == 0


def test_the_memory_of_fired_triggers_is_bounded(
    webhook_sink: WebhookSink, acr_tls: TestCA
) -> None:
    """Deleted policies were remembered for as long as the process ran; now the oldest go
    first past the bound, and a policy that fires again counts as the newest."""
    hook = RebuildStep(
        Secrets({"hook": {"hmacKey": SINK_KEY}}), verify=str(acr_tls.ca_cert), max_remembered=3
    )
    webhook = {"webhook": {"url": webhook_sink.url, "secretRef": {"name": "hook"}}}
    for i in range(5):
        body = _policy_body(webhook, {}, {})
        body["metadata"]["uid"] = f"uid-{i}"
        hook.apply(parse_policy("py", body["spec"]), body, _result(D2, 1), NOW)
    assert len(webhook_sink.deliveries) == 5
    assert hook.remembered() == 3

"""The drift loop end to end with provider ``azure``: the operator as a ``kopf run`` process,
the real Azure SDKs talking TLS to the fake ACR, Entra ID and Resource Manager, and
registry push events delivered to the operator's receiver."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import acr_push, checks_pass, event_grid_push
from tests.harness.acr_server import FakeAcr, RequestRecord
from tests.harness.arm_server import ARM_AUDIENCE, FakeArm
from tests.harness.controlplane import Kube
from tests.harness.entra import FakeEntra
from tests.harness.fixtures_acr import AcrIdentities
from tests.harness.flood import raise_open_files, still_open, tls_connect
from tests.harness.operator import OperatorProcess
from tests.harness.procs import free_port, proc_status, wait_for
from tests.harness.tlsca import TestCA

OPERATOR_NS = "imagedrift-system"
WEBHOOK_SECRET = "e2e-webhook-" + uuid.uuid4().hex
ENTRA_FLOW = {
    "workloadIdentity": "federated",
    "managedIdentity": "managed_identity",
    "servicePrincipal": "client_secret",
}


@pytest.fixture
def azure_operator(
    operator_factory: Callable[..., OperatorProcess],
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
) -> Callable[..., tuple[OperatorProcess, int]]:
    """Start the operator with the environment AKS would give it (workload identity
    variables, the IMDS endpoint) pointed at the fakes; returns it and its receiver port."""

    def start(**extra: str) -> tuple[OperatorProcess, int]:
        port = free_port()
        ca = str(acr_tls.ca_cert)
        env = {
            "IMAGEDRIFT_CA_BUNDLE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "SSL_CERT_FILE": ca,
            "AZURE_AUTHORITY_HOST": acr_identities.authority,
            "AZURE_TENANT_ID": acr_identities.tenant_id,
            "AZURE_CLIENT_ID": acr_identities.wi_client_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(acr_identities.wi_token_file),
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": acr_identities.authority,
            "IMAGEDRIFT_WEBHOOK_PORT": str(port),
            "IMAGEDRIFT_WEBHOOK_HOST": "127.0.0.1",
            "IMAGEDRIFT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "IMAGEDRIFT_WEBHOOK_CERT": str(acr_tls.server_cert),
            "IMAGEDRIFT_WEBHOOK_KEY": str(acr_tls.server_key),
            **extra,
        }
        return operator_factory(env=env), port

    return start


def azure_spec(ids: AcrIdentities, kind: str, secret: str = "") -> dict[str, Any]:
    """``spec.base.azure`` as a user writes it (the CRD has no authority fields)."""
    if kind == "servicePrincipal":
        return {
            "identity": kind,
            "clientId": ids.sp_client_id,
            "tenantId": ids.tenant_id,
            "secretRef": {"name": secret},
        }
    if kind == "workloadIdentity":
        return {"identity": kind, "clientId": ids.wi_client_id, "tenantId": ids.tenant_id}
    if kind == "managedIdentity":
        return {"identity": kind, "clientId": ids.mi_client_id}
    return {"identity": kind}


def base_spec(
    world: World, azure: dict[str, Any], *, name: str = "base", interval: str = "2s"
) -> dict[str, Any]:
    return {
        "image": world.ref(name),
        "tag": "1",
        "interval": interval,
        "provider": "azure",
        "azure": azure,
    }


def digest_of(world: World, policy: str) -> str:
    return str(
        ((world.get_policy(policy).get("status") or {}).get("base") or {}).get("digest") or ""
    )


def test_each_identity_follows_its_base(
    acr_world: World,
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
    operator_secrets: Callable[[str, dict[str, str]], str],
) -> None:
    world = acr_world
    kinds = ["workloadIdentity", "managedIdentity", "servicePrincipal", "anonymous"]
    sp_secret = operator_secrets("sp", {"clientSecret": acr_identities.sp_secret})
    policies = {}
    for kind in kinds:
        base, app = f"base-{kind.lower()}", f"app-{kind.lower()}"
        old = base_image(f"{kind}-v1")
        world.publish(base, "1", old)
        world.publish(app, "1.0.0", world.app_on(old, kind, base_name=f"{world.ref(base)}:1"))
        if kind == "anonymous":
            fake_acr.set_anonymous_pull(world.repo(base))
            fake_acr.set_anonymous_pull(world.repo(app))
        name = f"{kind.lower()}-{world.suffix}"
        world.deployment(kind.lower(), f"{world.ref(app)}:1.0.0", policy=name, replicas=1)
        policies[kind] = world.policy(
            kind.lower(),
            {"base": base_spec(world, azure_spec(acr_identities, kind, sp_secret), name=base)},
        )
    azure_operator()
    for kind in kinds:
        world.wait_ready(policies[kind], reason="UpToDate", timeout=90)
    flows = set(fake_entra.flows())
    assert {ENTRA_FLOW[k] for k in kinds if k in ENTRA_FLOW} <= flows

    new_digests = {}
    for kind in kinds:
        new_digests[kind] = world.publish(f"base-{kind.lower()}", "1", base_image(f"{kind}-v2"))
    for kind in kinds:
        body = world.wait_ready(policies[kind], reason="WaitingForRebuild", timeout=60)
        assert body["status"]["base"]["digest"] == new_digests[kind], kind
        assert body["status"]["workloads"]["drifted"] == 1, kind
    # The app's pipeline re-publishes 1.0.0 on the new base (sameTag): each identity rolls it.
    targets = {}
    for kind in kinds:
        rebuilt = world.app_on(
            base_image(f"{kind}-v2"), kind, base_name=f"{world.ref(f'base-{kind.lower()}')}:1"
        )
        digest = world.publish(f"app-{kind.lower()}", "1.0.0", rebuilt)
        targets[kind] = f"{world.ref(f'app-{kind.lower()}')}@{digest}"
    for kind in kinds:

        def rolled(kind: str = kind) -> bool:
            return rolled_out(world, kind.lower(), targets[kind])

        wait_for(rolled, what=f"{kind}: rolled to the rebuilt app", timeout=90)
        body = world.wait_ready(policies[kind], reason="UpToDate", timeout=60)
        entry = body["status"]["lineage"][0]
        assert entry["baseDigest"] == new_digests[kind] and entry["verdict"] == "Passed", kind
        assert entry["rollouts"][0]["result"] == "Complete", kind
    subjects = {r.subject for r in fake_acr.log()}
    assert "anonymous" in subjects
    assert {
        acr_identities.wi_client_id,
        acr_identities.sp_client_id,
        acr_identities.mi_client_id,
    } <= subjects


def test_steady_state_costs_one_request_per_distinct_base_per_poll(
    acr_world: World,
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
) -> None:
    world = acr_world
    bases = ["base-a", "base-b"]  # M = 2 distinct bases
    for base in bases:
        world.publish(base, "1", base_image(base))
    policies = [
        world.policy(
            f"p{i}",
            {
                "base": base_spec(
                    world, azure_spec(acr_identities, "workloadIdentity"), name=bases[i % 2]
                )
            },
        )
        for i in range(4)  # N = 4 policies
    ]
    azure_operator()
    for policy in policies:
        world.wait_ready(policy, reason="UpToDate", timeout=90)
    # Every base polled again since the first tokens were made: the window starts steady.
    mark = len(fake_acr.log())
    wait_for(
        lambda: all(
            any(f"/v2/{world.repo(b)}/manifests/" in r.path for r in fake_acr.log()[mark:])
            for b in bases
        ),
        what="every base polled again",
        timeout=30,
    )
    fake_acr.reset_counts()
    fake_entra.reset()
    interval, polls = 2.0, 4

    def requests_for(base: str) -> list[RequestRecord]:
        return [r for r in fake_acr.log() if f"/{world.repo(base)}/" in r.path]

    # The span is counted in polls of every base, seen by the fake, not slept through.
    wait_for(
        lambda: all(len(requests_for(b)) >= polls for b in bases),
        what=f"{polls} more polls of every base",
        timeout=60,
    )
    counts = fake_acr.counts()
    log = fake_acr.log()
    per_base = {b: len(requests_for(b)) for b in bases}
    print(f"steady state, interval {interval:g}s: {counts}, per base {per_base}")
    assert counts["exchange"] == 0 and counts["token"] == 0, counts
    assert fake_entra.issued == [], "no Entra ID token was requested again"
    assert all(r.method == "HEAD" and r.status == 200 for r in log), log
    assert sum(per_base.values()) == counts["v2"] + counts["metadata"] == len(log)
    # One lookup per base per interval, however many policies follow it (two each here):
    # by the fake's own clock, no base was asked twice within an interval.
    for base in bases:
        seen = sorted(r.received for r in requests_for(base))
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert min(gaps) >= interval * 0.75, (base, gaps)


def test_throttling_delays_and_does_not_fail_the_policy(
    acr_world: World,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
) -> None:
    world = acr_world
    world.publish("base", "1", base_image("v1"))
    policy = world.policy(
        "throttled", {"base": base_spec(world, azure_spec(acr_identities, "workloadIdentity"))}
    )
    azure_operator()
    world.wait_ready(policy, reason="UpToDate", timeout=90)
    fake_acr.reset_counts()
    fake_acr.throttle(count=1, retry_after=5)
    throttled = world.wait_policy(
        policy,
        lambda b: "throttled" in str((b.get("status") or {}).get("lastError") or ""),
        "lastError says throttled",
        timeout=30,
    )
    assert world.condition(policy)["status"] == "True", throttled["status"]["conditions"]
    assert "5s" in throttled["status"]["lastError"]
    wait_for(
        lambda: len(registry_requests(fake_acr)) >= 2,
        what="the request after the 429",
        timeout=30,
    )
    first, second = registry_requests(fake_acr)[:2]
    assert first.status == 429 and second.status == 200, (first, second)
    # Timed by the fake: from its 429 answer to its receipt of the next request. The
    # operator counts the Retry-After from when it began the lookup, a round trip before
    # the fake answered; half a second covers that round trip on a loaded machine, while
    # a retry that ignored the Retry-After would come at the 2 s interval or sooner.
    waited = second.received - first.answered
    print(f"next request {waited:.2f}s after the 429 (Retry-After: 5)")
    assert waited >= 5 - 0.5, f"retried {waited:.2f}s after a Retry-After of 5s"
    world.wait_policy(
        policy, lambda b: not (b.get("status") or {}).get("lastError"), "lastError cleared"
    )
    assert world.condition(policy)["status"] == "True"
    assert not any(r == "AuthenticationFailed" for _, r, _ in world.all_events(policy))


def test_refused_identities_mark_the_policy_not_ready_naming_them(
    acr_world: World,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
    operator_secrets: Callable[[str, dict[str, str]], str],
) -> None:
    world = acr_world
    world.publish("base", "1", base_image("v1"))
    wrong = operator_secrets("sp-wrong", {"clientSecret": "not-the-secret"})
    sp = world.policy(
        "wrongsecret",
        {"base": base_spec(world, azure_spec(acr_identities, "servicePrincipal", wrong))},
    )
    fake_acr.deny(acr_identities.mi_client_id)
    mi = world.policy(
        "denied", {"base": base_spec(world, azure_spec(acr_identities, "managedIdentity"))}
    )
    azure_operator()
    sp_body = world.wait_ready(sp, status="False", reason="AuthenticationFailed", timeout=90)
    mi_body = world.wait_ready(mi, status="False", reason="AuthenticationFailed", timeout=90)
    sp_message = world.condition(sp)["message"]
    assert f"service principal (client id {acr_identities.sp_client_id}" in sp_message
    assert "Invalid client secret" in sp_message
    mi_message = world.condition(mi)["message"]
    assert f"managed identity (client id {acr_identities.mi_client_id})" in mi_message
    assert "401" in mi_message or "refused" in mi_message
    assert sp_body["status"]["lastError"] and mi_body["status"]["lastError"]
    world.wait_event(sp, "AuthenticationFailed", type="Warning", anywhere=True)


def test_a_rotated_service_principal_secret_is_picked_up(
    acr_world: World,
    kube: Kube,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
    operator_secrets: Callable[[str, dict[str, str]], str],
) -> None:
    """The Secret first holds a secret Entra refuses; once it is rotated to the right one,
    the same operator (no restart) authenticates with it within IMAGEDRIFT_SECRET_TTL."""
    world = acr_world
    world.publish("base", "1", base_image("v1"))
    secret = operator_secrets("sp-rotated", {"clientSecret": "the-old-secret"})
    policy = world.policy(
        "rotated",
        {"base": base_spec(world, azure_spec(acr_identities, "servicePrincipal", secret))},
    )
    azure_operator(IMAGEDRIFT_SECRET_TTL="2")
    world.wait_ready(policy, status="False", reason="AuthenticationFailed", timeout=90)
    kube.core.patch_namespaced_secret(
        secret, OPERATOR_NS, {"stringData": {"clientSecret": acr_identities.sp_secret}}
    )
    body = world.wait_ready(policy, reason="UpToDate", timeout=90)
    assert body["status"]["base"]["digest"], body["status"]


def registry_requests(fake_acr: FakeAcr) -> list[RequestRecord]:
    """The metadata and ``/v2`` requests the fake logged (no token requests), in order."""
    return [r for r in fake_acr.log() if r.kind in ("metadata", "v2")]


def first_request(fake_acr: FakeAcr, what: str, timeout: float = 30) -> RequestRecord:
    """The first registry request the fake received since its counts were reset, waited for
    (bounded) and timed by the fake's own receipt timestamp, not by when the test looked."""
    wait_for(lambda: registry_requests(fake_acr), what=what, timeout=timeout)
    return min(registry_requests(fake_acr), key=lambda r: r.received)


def test_push_events_cause_a_check_at_once(
    acr_world: World,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
) -> None:
    world = acr_world
    world.publish("base", "1", base_image("v1"))
    policy = world.policy(
        "events",
        {"base": base_spec(world, azure_spec(acr_identities, "workloadIdentity"), interval="1h")},
    )
    operator, port = azure_operator()
    world.wait_ready(policy, reason="UpToDate", timeout=90)
    receiver = f"https://127.0.0.1:{port}/"
    http = httpx.Client(verify=acr_tls.client_context(), timeout=10)
    try:
        # Refused deliveries wake nothing.
        v2 = world.publish("base", "1", base_image("v2"))
        fake_acr.reset_counts()
        body = acr_push(world.repo("base"), "1", world.host)
        assert http.post(receiver, json=body).status_code == 401
        assert http.post(receiver, json=body, params={"token": "wrong"}).status_code == 401
        bad = http.post(
            receiver,
            content=b'{"action": "push", "target": {}}',
            headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
        )
        assert bad.status_code == 400 and "target.repository" in bad.json()["error"]
        # The receiver logs each refusal before it answers, and an accepted delivery
        # ("push event") before it hands the refs on, the only way to a check: so once the
        # answers are in, the log shows whether any of these reached the engine.
        log = operator.log()
        assert log.count("refused a POST from 127.0.0.1") == 2, log[-2000:]
        assert "refused a delivery from 127.0.0.1: " in log
        assert "push event (" not in log, "a refused delivery reached the engine"
        assert fake_acr.registry_requests() == 0, "a refused delivery caused a check"

        # An ACR webhook delivery (the secret in a header) makes the policy check "at once
        # instead of at its next interval": its interval is an hour and its last check came
        # before the refused deliveries above, so a registry request within the bounded wait
        # can only be the delivery's doing. The latency is timed by the fake's receipt of
        # that request and printed; a loaded 2-core machine is no benchmark to bound it by.
        sent = time.monotonic()
        answer = http.post(
            receiver, json=body, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 1
        first = first_request(fake_acr, "a registry request caused by the ACR delivery")
        print(f"ACR webhook -> first registry request: {first.received - sent:.2f}s")
        assert first.received >= sent
        wait_for(lambda: digest_of(world, policy) == v2, what="base v2 recorded", timeout=10)

        # An Event Grid delivery (the secret in the query, as Event Grid can only send).
        validation = http.post(
            receiver,
            params={"token": WEBHOOK_SECRET},
            json=[
                {
                    "id": "1",
                    "topic": "/subscriptions/x",
                    "subject": "",
                    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                    "eventTime": "2025-01-02T03:04:05Z",
                    "data": {"validationCode": "abc-123"},
                    "dataVersion": "1",
                    "metadataVersion": "1",
                }
            ],
        )
        assert validation.json() == {"validationResponse": "abc-123"}
        v3 = world.publish("base", "1", base_image("v3"))
        fake_acr.reset_counts()
        event = event_grid_push(acr_push(world.repo("base"), "1", world.host))
        sent = time.monotonic()
        answer = http.post(
            receiver, params={"token": WEBHOOK_SECRET}, content=json.dumps([event]).encode()
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 1
        first = first_request(fake_acr, "a registry request caused by the Event Grid delivery")
        print(f"Event Grid -> first registry request: {first.received - sent:.2f}s")
        assert first.received >= sent
        wait_for(lambda: digest_of(world, policy) == v3, what="base v3 recorded", timeout=10)
        world.wait_event(policy, "BaseChanged", type="Normal", anywhere=True)
    finally:
        http.close()


def test_a_flood_of_slow_connections_does_not_delay_a_valid_delivery(
    acr_world: World,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
) -> None:
    """500 clients that send half a request head and then nothing hold no thread of the
    operator's, and a valid push still wakes its policy while all of them are held open."""
    flood = 500
    raise_open_files(2 * flood + 300)  # this end of every connection, and the rest
    world = acr_world
    world.publish("base", "1", base_image("v1"))
    policy = world.policy(
        "flood",
        {"base": base_spec(world, azure_spec(acr_identities, "workloadIdentity"), interval="1h")},
    )
    operator, port = azure_operator(IMAGEDRIFT_WEBHOOK_DEADLINE="60")
    world.wait_ready(policy, reason="UpToDate", timeout=90)
    assert operator.proc is not None
    before = proc_status(operator.proc.pid, "Threads")
    slow = []
    try:
        for _ in range(flood):
            sock = tls_connect(acr_tls, port)
            slow.append(sock)
            sock.sendall(b"POST /?token=")  # and never the rest
        during = proc_status(operator.proc.pid, "Threads")
        held = sum(still_open(sock) for sock in slow)
        print(f"{flood} slow connections, {held} held: operator threads {before} -> {during}")
        assert held == flood
        assert during <= before + 2, "slow connections cost the operator threads"

        v2 = world.publish("base", "1", base_image("v2"))
        fake_acr.reset_counts()
        sent = time.monotonic()
        answer = httpx.post(
            f"https://127.0.0.1:{port}/",
            json=acr_push(world.repo("base"), "1", world.host),
            headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
            verify=acr_tls.client_context(),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        first = first_request(fake_acr, "a registry request caused by the delivery")
        # The requirement as an order of events, not a latency: the check the delivery
        # caused reached the registry while every slow connection was still held (each has
        # a 60 s deadline), so the flood did not have to end, or be cut off, before a valid
        # delivery got through. The interval is an hour: nothing else caused the request.
        still = sum(still_open(sock) for sock in slow)
        print(
            f"during the flood: push -> first registry request {first.received - sent:.2f}s "
            f"(the fake's receipt), {still} of {flood} slow connections still held"
        )
        assert first.received >= sent
        assert still == flood, "the delivery got through only once slow connections ended"
        after = proc_status(operator.proc.pid, "Threads")
        print(f"operator threads with the delivery handled: {after}")
        assert after <= before + 4 + 2, "the delivery pool is bounded (4 workers)"
        wait_for(lambda: digest_of(world, policy) == v2, what="base v2 recorded", timeout=10)
    finally:
        for sock in slow:
            sock.close()


def test_acr_task_runs_once_per_base_digest(
    acr_world: World,
    fake_acr: FakeAcr,
    fake_arm: FakeArm,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
) -> None:
    world = acr_world
    fake_arm.mode = "async"
    task_id = fake_arm.add_task("sub-e2e", "rg-e2e", "imagedriftacr", "rebuild-app")
    old = base_image("v1")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    name = f"rebuild-{world.suffix}"
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=name, replicas=1)
    policy = world.policy(
        "rebuild",
        {
            "base": base_spec(world, azure_spec(acr_identities, "workloadIdentity")),
            "rebuild": {
                "acrTask": {
                    "subscriptionId": "sub-e2e",
                    "resourceGroup": "rg-e2e",
                    "registry": "imagedriftacr",
                    "taskName": "rebuild-app",
                    "endpoint": fake_arm.url,
                    "audience": ARM_AUDIENCE,
                }
            },
        },
    )
    operator, _ = azure_operator()
    world.wait_ready(policy, reason="UpToDate", timeout=90)
    assert fake_arm.runs == [], "no rebuild while nothing drifted"

    v2 = world.publish("base", "1", base_image("v2"))
    # The trigger fires off the operator's workers: the ledger says Triggering until the
    # run was scheduled, and the check after that records the answer.
    body = world.wait_policy(
        policy,
        lambda b: answered(b, v2),
        "the answer of a rebuild for base v2",
        timeout=60,
    )
    rebuild = body["status"]["rebuild"]
    assert (rebuild["trigger"], rebuild["runId"], rebuild["outcome"]) == (
        "acrTask",
        "ca1",
        "Triggered",
    )
    assert rebuild["triggeredAt"] and "run ca1 Queued" in rebuild["message"]
    # The workload is drifted until a rebuild is published, so the policy is checked again
    # every interval on its own: no second run over three more of those checks.
    checks_pass(operator, policy, 3)
    assert [r.run_id for r in fake_arm.runs_for(task_id)] == ["ca1"]
    assert fake_arm.runs[0].client_id == acr_identities.wi_client_id

    v3 = world.publish("base", "1", base_image("v3"))
    world.wait_policy(
        policy, lambda b: answered(b, v3), "the answer of a rebuild for base v3", timeout=60
    )
    checks_pass(operator, policy, 2)
    assert [r.run_id for r in fake_arm.runs_for(task_id)] == ["ca1", "ca2"]
    events = [(t, r) for t, r, _ in world.all_events(policy)]
    assert events.count(("Normal", "RebuildTriggered")) == 2


def answered(body: dict[str, Any], digest: str) -> bool:
    """Has the rebuild for base ``digest`` been fired and answered (not Triggering)?"""
    ledger = (body.get("status") or {}).get("rebuild") or {}
    return ledger.get("baseDigest") == digest and ledger.get("outcome") in ("Triggered", "Failed")


def test_a_quarantined_rebuild_waits_for_the_registry_to_release_it(
    acr_world: World,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    azure_operator: Callable[..., tuple[OperatorProcess, int]],
) -> None:
    world = acr_world
    old, new = base_image("q-v1"), base_image("q-v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "q", base_name=f"{world.ref('base')}:1"))
    name = f"quarantine-{world.suffix}"
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=name, replicas=1)
    spec = base_spec(world, azure_spec(acr_identities, "workloadIdentity"))
    policy = world.policy("quarantine", {"base": spec})
    operator, _ = azure_operator()
    world.wait_ready(policy, reason="UpToDate", timeout=90)

    world.publish("base", "1", new)
    rebuilt = world.app_on(new, "q", base_name=f"{world.ref('base')}:1")
    fake_acr.set_quarantine(rebuilt.digest, "Quarantined")  # before it can be seen
    world.publish("app", "1.0.0", rebuilt)
    world.wait_policy(
        policy,
        lambda b: "quarantine" in str((b.get("status") or {}).get("workloads", {}).get("items")),
        "the quarantine named as the reason",
        timeout=60,
    )
    # Drifted, its only candidate refused: the policy is checked again every interval on its
    # own, and none of those checks may roll the quarantined image.
    checks_pass(operator, policy, 2)
    assert world.image_of("web").endswith(":1.0.0"), "a quarantined image was rolled"

    fake_acr.set_quarantine(rebuilt.digest, "Passed")
    target = f"{world.ref('app')}@{rebuilt.digest}"
    wait_for(lambda: rolled_out(world, "web", target), what="rolled once released", timeout=90)

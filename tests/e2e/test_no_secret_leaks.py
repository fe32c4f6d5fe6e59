"""No secret the suite made or a fake server issued reaches a log line, an Event, a policy
status or a Deployment annotation.

Runs last (marker ``last``): it reads every operator log of the session and what
``tests/e2e/conftest.py`` kept of the cluster after each test. So that it proves something
when run alone too, it first puts secrets in play itself, with the operator at DEBUG: a
bearer-token registry reached with a docker-config Secret, a service principal's client
secret against the fake ACR and Entra ID, a rebuild webhook's HMAC key, and push deliveries
carrying the receiver's secret in each place a sender can put it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import pytest

from imagedrift.registry.base import Credentials
from imagedrift.registry.oci import OciRegistryClient
from tests.e2e.promised import wait_lineage_row
from tests.e2e.scenario import World, base_image, rolled_out
from tests.e2e.support import acr_push, base_spec, event_grid_push, git_access
from tests.harness import leaks
from tests.harness.acr_server import FakeAcr
from tests.harness.arm_server import WebhookSink
from tests.harness.controlplane import Kube
from tests.harness.entra import FakeEntra
from tests.harness.fixtures_acr import AcrIdentities
from tests.harness.fixtures_arm import SINK_KEY
from tests.harness.flux import Flux
from tests.harness.flux_app import MANIFESTS, FluxApp, deployment_yaml
from tests.harness.git_server import GitServer
from tests.harness.operator import OperatorProcess
from tests.harness.procs import free_port, wait_for
from tests.harness.registry_proxy import RegistryProxy
from tests.harness.tlsca import TestCA

pytestmark = pytest.mark.last

# This test alone remembers more than these (its own values plus the tokens issued).
MIN_SECRETS = 10
ISSUED_KINDS = ("registry bearer token", "Entra ID access token", "ACR refresh token")


def test_no_secret_reaches_a_log_an_event_or_a_status(
    world: World,
    kube: Kube,
    registry_proxy: RegistryProxy,
    pull_secret: Callable[[str, str], str],
    operator_secrets: Callable[[str, dict[str, str]], str],
    operator_factory: Callable[..., OperatorProcess],
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    webhook_sink: WebhookSink,
    flux: Flux,
    git_server: GitServer,
    git_repo: str,
) -> None:
    webhook_secret = "leak-webhook-" + secrets.token_hex(16)
    wrong_secret = "leak-wrong-" + secrets.token_hex(16)
    leaks.remember(wrong_secret, "a wrong webhook secret a sender offered")
    password = "leak-robot-" + secrets.token_urlsafe(18)

    # A private registry behind bearer auth, a policy that rebuilds through a signed webhook.
    registry_proxy.require_bearer({"robot": password})
    private = World(registry_proxy.host, world.client, kube, world.namespace, suffix=world.suffix)
    old, new = base_image("leak-v1"), base_image("leak-v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1"))
    hook = operator_secrets("hook", {"hmacKey": SINK_KEY.decode()})
    name = f"private-{world.suffix}"
    world.deployment("web", f"{private.ref('app')}:1.0.0", policy=name, replicas=1)
    private_policy = world.policy(
        "private",
        {
            "base": {
                "image": private.ref("base"),
                "tag": "1",
                "interval": "2s",
                "insecure": True,
                "secretRef": {"name": pull_secret("robot", password)},
            },
            "app": {"tags": {"semver": {"range": "^1"}}},
            "rebuild": {"webhook": {"url": webhook_sink.url, "secretRef": {"name": hook}}},
        },
    )

    # A base in the fake ACR read as a service principal; only push events make it look.
    user, admin_password = fake_acr.admin_user
    pusher = OciRegistryClient(
        fake_acr.host,
        Credentials(user, admin_password, identity="acr admin"),
        verify=acr_tls.ca_cert,
    )
    acr = World(fake_acr.host, pusher, kube, world.namespace)  # own suffix: same storage
    try:
        acr.publish("base", "1", base_image("leak-acr-v1"))
        sp = operator_secrets("sp", {"clientSecret": acr_identities.sp_secret})
        acr_policy = world.policy(
            "acr",
            {
                "base": {
                    "image": acr.ref("base"),
                    "tag": "1",
                    "interval": "1h",
                    "provider": "azure",
                    "azure": {
                        "identity": "servicePrincipal",
                        "clientId": acr_identities.sp_client_id,
                        "tenantId": acr_identities.tenant_id,
                        "secretRef": {"name": sp},
                    },
                }
            },
        )

        # GitOps write-back: a Flux-applied Deployment whose rebuild is committed to git
        # with the git server's password (and the index Secret naming its Secret).
        git_policy, git_env = _gitops_app(world, kube, flux, git_server, git_repo, operator_secrets)

        port = free_port()
        ca = str(acr_tls.ca_cert)
        operator = operator_factory(
            env={
                "IMAGEDRIFT_CA_BUNDLE": ca,
                "REQUESTS_CA_BUNDLE": ca,
                "SSL_CERT_FILE": ca,
                "AZURE_AUTHORITY_HOST": acr_identities.authority,
                "IMAGEDRIFT_WEBHOOK_PORT": str(port),
                "IMAGEDRIFT_WEBHOOK_HOST": "127.0.0.1",
                "IMAGEDRIFT_WEBHOOK_SECRET": webhook_secret,
                "IMAGEDRIFT_WEBHOOK_CERT": str(acr_tls.server_cert),
                "IMAGEDRIFT_WEBHOOK_KEY": str(acr_tls.server_key),
                **git_env,
            },
            debug=True,
        )
        world.wait_ready(private_policy, reason="UpToDate", timeout=90)
        world.wait_ready(acr_policy, reason="UpToDate", timeout=90)
        assert registry_proxy.token_requests, "the bearer-token flow was not used"
        assert "client_secret" in fake_entra.flows(), "the client secret was not used"

        _deliver(
            f"https://127.0.0.1:{port}/",
            acr_tls,
            fake_acr,
            acr,
            webhook_secret,
            wrong_secret,
            private_repo=private.repo("base"),
            private_host=registry_proxy.host,
        )

        # Drift: the rebuild webhook is called (signed), then the rebuilt app rolls out.
        world.publish("base", "1", new)
        wait_for(
            lambda: any(d.signature_ok for d in webhook_sink.deliveries),
            what="a signed rebuild request",
            timeout=60,
        )
        rebuilt = world.publish("app", "1.0.1", world.app_on(new, "2"))
        world.publish("gapp", "1.0.1", world.app_on(new, "g2"))
        target = f"{private.ref('app')}@{rebuilt}"
        wait_for(lambda: rolled_out(world, "web", target), what="rolled to the rebuild", timeout=90)
        world.wait_ready(private_policy, reason="UpToDate", timeout=60)
        row = wait_lineage_row(
            world, git_policy, f"deployment/{world.namespace}/gitweb", "Complete"
        )
        assert row.get("commit") == git_server.head(git_repo), row
        # What a reviewer reads in git is read too: every commit's message.
        for commit in git_server.log(git_repo):
            leaks.keep(f"git commit {commit.sha}", git_server.message(git_repo, commit.sha))
    finally:
        pusher.close()

    leaks.snapshot_cluster(kube)
    # With parallel workers, the others' logs, statuses and Events too: wait for each to
    # finish its last test and export (this test is the last one handed out).
    wait_for(leaks.others_exported, what="every other worker's export", timeout=540)
    run = leaks.gather()
    remembered = run.secrets
    logs = {f"log {path}": path.read_text(errors="replace") for path in run.logs}
    kept = run.texts
    found = leaks.find(remembered, {**logs, **kept})
    counts = {
        "workers": 1 + len(leaks.other_workers()),
        "secrets remembered": len(remembered),
        "log files": len(logs),
        "log lines": sum(text.count("\n") for text in logs.values()),
        "DEBUG log lines": sum(text.count("[DEBUG") for text in logs.values()),
        "Event versions": sum(1 for where in kept if where.startswith("Event ")),
        "ImagePolicy statuses": sum(1 for where in kept if where.startswith("ImagePolicy ")),
        "Deployment annotation sets": sum(1 for where in kept if where.startswith("Deployment ")),
        "other kept outputs": sum(
            1 for where in kept if not where.startswith(("Event ", "ImagePolicy ", "Deployment "))
        ),
    }
    print("secret-leak check:", json.dumps(counts))
    assert not run.missed, f"snapshots missed, so less was checked: {run.missed}"
    if found:
        pytest.fail(
            f"{len(found)} secret value(s) found where a user can read them:\n"
            + "\n".join(f"- {leak}" for leak in found),
            pytrace=False,
        )

    # Not vacuous: the values of this test were remembered and the places they could leak
    # to were read (a DEBUG log of this operator, our policies' status, our Events).
    values = {secret.value for secret in remembered}
    assert len(remembered) >= MIN_SECRETS, counts
    assert {webhook_secret, wrong_secret, password, acr_identities.sp_secret} <= values
    assert SINK_KEY.decode() in values
    for kind in ISSUED_KINDS:
        assert any(s.what.startswith(kind) for s in remembered), f"no {kind} remembered"
    assert operator.proc is not None and operator.proc.log_path in leaks.watched()
    own_log = _text(operator.proc.log_path)
    assert "[DEBUG" in own_log, "the operator did not log at DEBUG"
    assert "push-event receiver" in own_log or "/?<redacted>" in own_log, "no receiver lines"
    for policy in (private_policy, acr_policy):
        assert any(w.startswith(f"ImagePolicy {policy}@") for w in kept), f"no status of {policy}"
    assert any(private_policy in text for w, text in kept.items() if w.startswith("Event ")), (
        "no Event about the private policy was read"
    )
    assert any(w.startswith(f"Deployment {world.namespace}/web@") for w in kept), (
        "the rolled Deployment's annotations were not read"
    )
    assert git_server.password in values, "the git server's password was not remembered"
    assert any(w.startswith("git commit ") for w in kept), "no commit message was read"
    assert any(w.startswith(f"ImagePolicy {git_policy}@") for w in kept), "no GitOps status"


def _gitops_app(
    world: World,
    kube: Kube,
    flux: Flux,
    git_server: GitServer,
    git_repo: str,
    operator_secrets: Callable[[str, dict[str, str]], str],
) -> tuple[str, dict[str, str]]:
    """A kwok Deployment in git, applied by Flux, governed by a policy that commits; the
    operator's environment naming the index Secret of its git credentials."""
    world.publish("gapp", "1.0.0", world.app_on(base_image("leak-v1"), "g1"))
    policy = f"git-{world.suffix}"
    image = f"{world.ref('gapp')}:1.0.0"
    manifest = deployment_yaml("gitweb", image, labels={"imagedrift.io/policy": policy})
    app = FluxApp(
        kube, flux, git_server, git_repo, world.namespace, interval="5s", deployment="gitweb"
    )
    app.deploy({f"{MANIFESTS}/gitweb.yaml": manifest}, image)
    world.policy(
        "git",
        {
            "base": base_spec(world),
            "app": {"tags": {"semver": {"range": "^1"}}},
            "gitops": {"mode": "Commit"},
        },
    )
    return policy, git_access(operator_secrets, git_server)


def _deliver(
    receiver: str,
    tls: TestCA,
    fake_acr: FakeAcr,
    acr: World,
    secret: str,
    wrong: str,
    *,
    private_repo: str,
    private_host: str,
) -> None:
    """Push deliveries with the receiver's secret as a bearer token, in the
    X-Imagedrift-Token header and in ``?token=``, and one with a wrong secret."""
    push = acr_push(acr.repo("base"), "1", acr.host)
    grid = event_grid_push(push)
    distribution = {"events": [acr_push(private_repo, "1", private_host)]}
    with httpx.Client(verify=tls.client_context(), timeout=10) as http:
        refused = http.post(receiver, params={"token": wrong}, json=push)
        assert refused.status_code == 401
        sends: dict[str, Callable[[], httpx.Response]] = {
            "bearer": lambda: http.post(
                receiver, json=push, headers={"Authorization": f"Bearer {secret}"}
            ),
            "query": lambda: http.post(receiver, json=[grid], params={"token": secret}),
        }
        for how, send in sends.items():
            # The ACR base is polled hourly: a lookup after the delivery is its effect.
            mark = len(fake_acr.log())
            answer = send()
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, how
            wait_for(
                partial(_looked_up, fake_acr, f"/{acr.repo('base')}/manifests/", mark),
                what=f"a lookup woken by the {how} delivery",
                timeout=30,
            )
        answer = http.post(receiver, json=distribution, headers={"X-Imagedrift-Token": secret})
        assert answer.status_code == 200 and answer.json()["accepted"] == 1


def _looked_up(fake_acr: FakeAcr, path: str, mark: int) -> bool:
    return any(path in r.path for r in fake_acr.log()[mark:])


def _text(path: Path) -> str:
    return path.read_text(errors="replace")

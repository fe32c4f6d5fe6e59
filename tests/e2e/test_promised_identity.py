"""The README's ``spec.base.azure.identity: default`` end to end: the operator authenticates
to ACR with ``DefaultAzureCredential``, i.e. as whatever credential its environment
provides, against the fake Entra ID and ACR (the real Azure SDKs, TLS on loopback)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.scenario import World, base_image
from tests.e2e.support import wait_rolled
from tests.harness.acr_server import FakeAcr
from tests.harness.entra import SYSTEM_ASSIGNED, FakeEntra
from tests.harness.fixtures_acr import AcrIdentities
from tests.harness.operator import OperatorProcess
from tests.harness.tlsca import TestCA


@dataclass(frozen=True)
class Environment:
    """What the operator's pod offers ``DefaultAzureCredential``, and who it should be."""

    variables: Callable[[AcrIdentities], dict[str, str]]
    subject: Callable[[AcrIdentities], str]  # the identity ACR sees
    flow: str  # the Entra ID flow that authenticated it


ENVIRONMENTS = {
    # AKS workload identity: the webhook injects these variables and projects the token.
    "workload-identity": Environment(
        lambda ids: {
            "AZURE_TENANT_ID": ids.tenant_id,
            "AZURE_CLIENT_ID": ids.wi_client_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(ids.wi_token_file),
        },
        lambda ids: ids.wi_client_id,
        "federated",
    ),
    # A node (or VM) with a system-assigned managed identity: only the IMDS endpoint.
    "managed-identity": Environment(
        lambda ids: {}, lambda ids: SYSTEM_ASSIGNED, "managed_identity"
    ),
}


def _operator_env(ids: AcrIdentities, ca: TestCA, extra: dict[str, str]) -> dict[str, str]:
    """The fake Entra ID as the authority and as the IMDS endpoint (so no request ever
    leaves loopback), its CA trusted, plus ``extra``."""
    bundle = str(ca.ca_cert)
    return {
        "IMAGEDRIFT_CA_BUNDLE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "SSL_CERT_FILE": bundle,
        "AZURE_AUTHORITY_HOST": ids.authority,
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": ids.authority,
        **extra,
    }


def _base(world: World, azure: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": world.ref("base"),
        "tag": "1",
        "interval": "2s",
        "provider": "azure",
        "azure": azure,
    }


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_identity_default_authenticates_as_the_credential_the_environment_provides(
    acr_world: World,
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    operator_factory: Callable[..., OperatorProcess],
    environment: str,
) -> None:
    """README: ``identity: default (DefaultAzureCredential)``. With ``identity: default``
    the operator follows an ACR base and rolls the rebuilt app as the identity its pod's
    environment provides: the workload identity the AKS webhook injects, or else the
    managed identity behind IMDS. The fake ACR saw only that identity; Entra ID issued
    tokens by that flow only."""
    world, env = acr_world, ENVIRONMENTS[environment]
    old, new = base_image(f"default-{environment}-v1"), base_image(f"default-{environment}-v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"default-{world.suffix}")
    policy = world.policy(
        "default",
        {
            "base": _base(world, {"identity": "default"}),
            "app": {"tags": {"semver": {"range": ">=1.0.0"}}},
        },
    )
    operator_factory(env=_operator_env(acr_identities, acr_tls, env.variables(acr_identities)))
    world.wait_ready(policy, reason="UpToDate", timeout=90)

    new_base = world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    target = f"{world.ref('app')}@{rebuilt}"
    wait_rolled(world, "web", target)
    body = world.wait_ready(policy, reason="UpToDate", timeout=60)
    entry = body["status"]["lineage"][0]
    assert (entry["baseDigest"], entry["appDigest"], entry["verdict"]) == (
        new_base,
        rebuilt,
        "Passed",
    ), entry
    assert [r["result"] for r in entry["rollouts"]] == ["Complete"], entry["rollouts"]

    # Who the registry served ("" marks token endpoints and 401 challenges; "admin" is the
    # test's own pushes).
    seen = {r.subject for r in fake_acr.log() if r.subject not in ("", "admin")}
    assert seen == {env.subject(acr_identities)}, seen
    assert set(fake_entra.flows()) == {env.flow}, fake_entra.flows()


def test_a_refused_default_identity_is_named(
    acr_world: World,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """README: "A refused identity makes ``Ready=False/AuthenticationFailed`` with a message
    naming it". ACR refuses the workload identity ``DefaultAzureCredential`` picked in an
    AKS pod: the policy is not ready, its message names ``DefaultAzureCredential``, and a
    Warning Event says so."""
    world = acr_world
    world.publish("base", "1", base_image("default-refused"))
    fake_acr.deny(acr_identities.wi_client_id)
    try:
        policy = world.policy("refused", {"base": _base(world, {"identity": "default"})})
        variables = ENVIRONMENTS["workload-identity"].variables(acr_identities)
        operator_factory(env=_operator_env(acr_identities, acr_tls, variables))
        body = world.wait_ready(policy, status="False", reason="AuthenticationFailed", timeout=90)
    finally:
        fake_acr.deny(acr_identities.wi_client_id, denied=False)
    message = world.condition(policy)["message"]
    assert "DefaultAzureCredential was refused (401)" in message, message
    assert body["status"]["lastError"]
    world.wait_event(policy, "AuthenticationFailed", type="Warning", anywhere=True)

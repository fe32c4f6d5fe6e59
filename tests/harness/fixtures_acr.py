"""pytest fixtures for the fake Azure Container Registry (loaded by tests/conftest.py).

- ``acr_tls``: a test CA and a 127.0.0.1/localhost server certificate (session).
- ``fake_entra``: Entra ID token endpoints with one identity per flow (session).
- ``acr_identities``: those identities' ids, secret, token file and authority.
- ``fake_acr``: the ACR protocol over TLS in front of the session ``registry``; knobs,
  counters and injected failures are reset after every test.
- ``acr_push``: push an ``Image``/``Index`` through the fake ACR (as its admin user).
- ``acr_repo``: a repository name unique to the test.
- ``acr_client_factory``: build ``AcrRegistryClient``s for the fake ACR; closed afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imagedrift.registry.acr import AcrRegistryClient
from imagedrift.registry.base import Credentials
from imagedrift.registry.oci import OciRegistryClient
from imagedrift.registry.push import Image, Index, push
from tests.harness import leaks
from tests.harness.acr_server import FakeAcr
from tests.harness.entra import FakeEntra
from tests.harness.registry import Registry
from tests.harness.tlsca import TestCA, make_test_ca


@dataclass(frozen=True)
class AcrIdentities:
    """The test identities ``fake_entra`` knows, one per azure-identity flow."""

    authority: str
    tenant_id: str
    sp_client_id: str
    sp_secret: str
    wi_client_id: str
    wi_token_file: Path
    mi_client_id: str  # a user-assigned managed identity (system-assigned works too)

    def spec(self, kind: str) -> dict[str, str]:
        """The policy's ``base.azure`` dict for ``kind``, pointed at the fake Entra."""
        if kind == "servicePrincipal":
            return {
                "identity": kind,
                "clientId": self.sp_client_id,
                "tenantId": self.tenant_id,
                "authorityHost": self.authority,
            }
        if kind == "workloadIdentity":
            return {
                "identity": kind,
                "clientId": self.wi_client_id,
                "tenantId": self.tenant_id,
                "tokenFile": str(self.wi_token_file),
                "authorityHost": self.authority,
            }
        if kind == "managedIdentity":
            return {"identity": kind, "clientId": self.mi_client_id}
        return {"identity": kind}


@pytest.fixture(scope="session")
def acr_tls(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("acr-tls"))


@pytest.fixture(scope="session")
def _entra_session(
    acr_tls: TestCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FakeEntra, AcrIdentities]]:
    entra = FakeEntra(acr_tls).start()
    token_file = tmp_path_factory.mktemp("workload-identity") / "azure-identity-token"
    # What the workload identity webhook projects: a service account JWT (opaque here).
    assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aW1hZ2VkcmlmdCJ9.c2ln"
    token_file.write_text(assertion)
    identities = AcrIdentities(
        authority=entra.url,
        tenant_id=entra.tenant,
        sp_client_id="00000000-0000-0000-0000-00000000005b",
        sp_secret="sp-secret-" + uuid.uuid4().hex,
        wi_client_id="00000000-0000-0000-0000-0000000000a1",
        wi_token_file=token_file,
        mi_client_id="00000000-0000-0000-0000-0000000000c3",
    )
    leaks.remember(assertion, "workload identity service account token")
    leaks.remember(identities.sp_secret, "service principal client secret")
    entra.add_client_secret(identities.sp_client_id, identities.sp_secret)
    entra.add_federated(identities.wi_client_id, assertion)
    entra.add_managed_identity(identities.mi_client_id)
    entra.add_managed_identity()
    try:
        yield entra, identities
    finally:
        entra.stop()


@pytest.fixture
def fake_entra(_entra_session: tuple[FakeEntra, AcrIdentities]) -> Iterator[FakeEntra]:
    entra = _entra_session[0]
    entra.reset()
    yield entra
    entra.lifetime = 3600


@pytest.fixture
def acr_identities(_entra_session: tuple[FakeEntra, AcrIdentities]) -> AcrIdentities:
    return _entra_session[1]


@pytest.fixture(scope="session")
def _acr_session(
    acr_tls: TestCA, _entra_session: tuple[FakeEntra, AcrIdentities], registry: Registry
) -> Iterator[FakeAcr]:
    acr = FakeAcr(acr_tls, _entra_session[0], registry.url).start()
    try:
        yield acr
    finally:
        acr.stop()


@pytest.fixture
def fake_acr(_acr_session: FakeAcr, fake_entra: FakeEntra) -> Iterator[FakeAcr]:
    """The session's fake ACR with zeroed counters; knobs are restored after the test."""
    _acr_session.reset()
    yield _acr_session
    _acr_session.reset()


@pytest.fixture
def acr_repo(request: pytest.FixtureRequest) -> str:
    """``acr/<test-name>-<random>``: a repository no other test uses."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"acr/{slug or 'test'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def acr_push(
    fake_acr: FakeAcr, acr_tls: TestCA
) -> Iterator[Callable[[str, Image | Index, str], str]]:
    """``push(repository, artifact, tag) -> digest`` through the fake ACR as its admin user
    (so the ACR records push times); counters are reset after each push."""
    user, password = fake_acr.admin_user
    client = OciRegistryClient(
        fake_acr.host,
        Credentials(user, password, identity="acr admin"),
        verify=acr_tls.ca_cert,
    )

    def push_tagged(repository: str, artifact: Image | Index, tag: str) -> str:
        digest = push(client, repository, artifact, tag)
        fake_acr.reset_counts()
        return digest

    try:
        yield push_tagged
    finally:
        client.close()


@pytest.fixture
def acr_client_factory(
    fake_acr: FakeAcr,
    acr_tls: TestCA,
    acr_identities: AcrIdentities,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., AcrRegistryClient]]:
    """``make(kind, **options)``: an ``AcrRegistryClient`` for the fake ACR as identity
    ``kind`` (servicePrincipal gets the right secret unless ``secret=`` says otherwise;
    managedIdentity finds the fake IMDS through ``AZURE_POD_IDENTITY_AUTHORITY_HOST``)."""
    made: list[AcrRegistryClient] = []

    def make(kind: str, **options: Any) -> AcrRegistryClient:
        if kind == "servicePrincipal":
            options.setdefault("secret", acr_identities.sp_secret)
        if kind == "managedIdentity":
            monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", acr_identities.authority)
        client = AcrRegistryClient(
            fake_acr.host,
            acr_identities.spec(kind),
            connection_verify=str(acr_tls.ca_cert),
            **options,
        )
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()

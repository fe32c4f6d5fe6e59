"""The ACR backend against the ACR protocol over TLS, with the real Azure SDKs end to end.

``azure-identity`` gets its tokens from the fake Entra ID, ``azure-containerregistry``
talks to the fake ACR, which serves ``/v2`` from the session's real CNCF registry. Nothing
of the SDKs is mocked; every server listens on 127.0.0.1.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.identity import ClientSecretCredential

from imagedrift.core.images import ResolvedImage
from imagedrift.core.refs import ImageRef
from imagedrift.errors import NotFound, RegistryAuthError, RegistryThrottled, RegistryUnavailable
from imagedrift.registry.acr import AcrRegistryClient, acr_scope, token_expiry
from imagedrift.registry.base import RegistryClient
from imagedrift.registry.oci import sha256_digest
from imagedrift.registry.push import (
    LINUX_AMD64,
    LINUX_ARM64,
    Image,
    Index,
    Layer,
    base_marks,
)
from tests.harness.acr_server import FakeAcr, make_jwt
from tests.harness.entra import FakeEntra
from tests.harness.fixtures_acr import AcrIdentities
from tests.harness.procs import free_port
from tests.harness.tlsca import TestCA

MakeClient = Callable[..., AcrRegistryClient]
Push = Callable[[str, Image | Index, str], str]

IDENTITY_KINDS = ["workloadIdentity", "managedIdentity", "servicePrincipal", "anonymous"]
ENTRA_FLOW = {
    "workloadIdentity": "federated",
    "managedIdentity": "managed_identity",
    "servicePrincipal": "client_secret",
}


def _base_index() -> Index:
    amd = Image(
        layers=(
            Layer.from_files({"etc/os-release": "ID=demo\nVERSION_ID=1\n", "bin/sh": "amd64"}),
        ),
        platform=LINUX_AMD64,
        labels={"org.opencontainers.image.vendor": "imagedrift tests"},
    )
    arm = Image(
        layers=(
            Layer.from_files({"etc/os-release": "ID=demo\nVERSION_ID=1\n", "bin/sh": "arm64"}),
        ),
        platform=LINUX_ARM64,
        labels={"org.opencontainers.image.vendor": "imagedrift tests"},
    )
    return Index.of(amd, arm).with_attestations()


def _ref(acr: FakeAcr, repository: str, tag: str) -> ImageRef:
    return ImageRef.parse(f"{acr.host}/{repository}:{tag}")


@pytest.mark.parametrize("kind", IDENTITY_KINDS)
def test_each_identity_reads_index_platforms_labels_and_layers(
    kind: str,
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_identities: AcrIdentities,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    base_repo, app_repo = f"{acr_repo}/base", f"{acr_repo}/app"
    base = _base_index()
    base_digest = acr_push(base_repo, base, "1")
    app = base.derive(
        Layer.from_files({"app/main.py": "print('hello')\n"}),
        annotations=base_marks(base_digest, f"{fake_acr.host}/{base_repo}:1"),
        labels={"org.opencontainers.image.title": "app"},
    )
    app_digest = acr_push(app_repo, app, "1.0.0")
    if kind == "anonymous":
        fake_acr.set_anonymous_pull(base_repo)
        fake_acr.set_anonymous_pull(app_repo)
    fake_entra.reset()

    client = acr_client_factory(kind)
    backend: RegistryClient = client  # the backend satisfies the protocol
    assert backend.resolve_digest(_ref(fake_acr, base_repo, "1")) == base_digest
    assert backend.resolve_digest(_ref(fake_acr, app_repo, "1.0.0")) == app_digest

    image = backend.get_image(_ref(fake_acr, app_repo, "1.0.0"))
    assert isinstance(image, ResolvedImage)
    assert image.is_index and image.digest == app_digest
    assert image.annotations == base_marks(base_digest, f"{fake_acr.host}/{base_repo}:1")
    assert {str(m.platform) for m in image.manifests} == {"linux/amd64", "linux/arm64"}
    for platform in (LINUX_AMD64, LINUX_ARM64):
        manifest = image.for_platform(platform)
        assert manifest is not None
        base_image = base.for_platform(platform)
        assert manifest.digest == app.for_platform(platform).digest
        assert manifest.layers[: len(base_image.layers)] == base_image.layer_digests
        assert len(manifest.layers) == len(base_image.layers) + 1
        assert manifest.labels == {
            "org.opencontainers.image.vendor": "imagedrift tests",
            "org.opencontainers.image.title": "app",
        }
        assert manifest.config_digest == app.for_platform(platform).config_digest

    base_image_read = backend.get_image(_ref(fake_acr, base_repo, "1"))
    # The attestation manifests of the base index are not platform images.
    assert len(base_image_read.manifests) == 2

    layer = base.for_platform(LINUX_ARM64).layers[0]
    assert backend.get_blob(_ref(fake_acr, base_repo, "1"), layer.digest) == layer.blob
    raw, media_type, digest = backend.get_manifest(_ref(fake_acr, app_repo, "1.0.0"))
    assert (raw, media_type, digest) == (
        app.manifest_bytes(),
        "application/vnd.oci.image.index.v1+json",
        app_digest,
    )
    assert backend.list_tags(_ref(fake_acr, app_repo, "1.0.0")) == ["1.0.0"]

    flows = fake_entra.flows()
    if kind == "anonymous":
        assert flows == []
        assert fake_acr.counts()["exchange"] == 0
        with pytest.raises(RegistryAuthError, match="anonymous"):
            client.tag_info(_ref(fake_acr, app_repo, "1.0.0"))
    else:
        # One Entra token, one exchange, then ACR tokens per scope (pull per repo, metadata).
        assert flows == [ENTRA_FLOW[kind]]
        assert fake_acr.counts()["exchange"] == 1
        issued = fake_entra.issued[0]
        expected_client = {
            "workloadIdentity": acr_identities.wi_client_id,
            "managedIdentity": acr_identities.mi_client_id,
            "servicePrincipal": acr_identities.sp_client_id,
        }[kind]
        assert issued.client_id == expected_client
        fake_acr.set_quarantine(app_digest, "Quarantined")
        fake_acr.set_signed(app_repo, "1.0.0")
        info = client.tag_info(_ref(fake_acr, app_repo, "1.0.0"))
        assert (info.name, info.digest, info.signed, info.quarantine_state) == (
            "1.0.0",
            app_digest,
            True,
            "Quarantined",
        )
        assert info.last_updated.endswith("Z") and info.last_updated[:4].isdigit()


def test_steady_state_lookup_costs_one_request_and_no_token_traffic(
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    tags = ["1", "2", "3"]  # M distinct tags
    digests = {}
    for number, tag in enumerate(tags):
        image = Image(layers=(Layer.from_files({"version": f"{number}\n"}),))
        digests[tag] = acr_push(acr_repo, image, tag)
    seen: list[tuple[str, str, str, int]] = []
    client = acr_client_factory(
        "workloadIdentity", on_request=lambda *exchange: seen.append(exchange)
    )
    for tag in tags:  # warm-up: one Entra token, one exchange, one pull token
        assert client.resolve_digest(_ref(fake_acr, acr_repo, tag)) == digests[tag]
    assert fake_acr.counts() == {"exchange": 1, "token": 1, "metadata": 0, "v2": 3}
    fake_acr.reset_counts()
    fake_entra.reset()

    lookups = 30  # N
    for i in range(lookups):
        tag = tags[i % len(tags)]
        assert client.resolve_digest(_ref(fake_acr, acr_repo, tag)) == digests[tag]

    assert fake_acr.counts() == {"exchange": 0, "token": 0, "metadata": 0, "v2": lookups}
    assert all(r.status == 200 and r.method == "HEAD" for r in fake_acr.log())
    # The client's own request hook saw the same: warm-up (exchange, token, 3 HEADs), N HEADs.
    assert [e[1:3] for e in seen[:2]] == [("POST", "/oauth2/exchange"), ("POST", "/oauth2/token")]
    assert len(seen) == 2 + len(tags) + lookups
    assert {(e[0], e[1], e[3]) for e in seen[2:]} == {(fake_acr.host, "HEAD", 200)}
    assert fake_entra.issued == []
    assert (client.token_stats.exchanges, client.token_stats.access_tokens) == (1, 1)


def test_naive_sdk_costs_four_requests_per_lookup(
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    """Why the backend exists: the SDK as shipped re-authenticates every operation."""
    acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "1"}),)), "1")
    credential = ClientSecretCredential(
        acr_identities.tenant_id,
        acr_identities.sp_client_id,
        acr_identities.sp_secret,
        authority=acr_identities.authority,
        disable_instance_discovery=True,
        connection_verify=str(acr_tls.ca_cert),
    )
    lookups = 5
    with ContainerRegistryClient(
        fake_acr.url, credential, connection_verify=str(acr_tls.ca_cert), retry_total=0
    ) as naive:
        naive.get_tag_properties(acr_repo, "1")  # warm-up (Entra token cached by MSAL)
        fake_acr.reset_counts()
        for _ in range(lookups):
            assert naive.get_tag_properties(acr_repo, "1").digest.startswith("sha256:")
    naive_counts = fake_acr.counts()
    naive_per_lookup = sum(naive_counts.values()) / lookups

    backend = acr_client_factory("servicePrincipal")
    backend.resolve_digest(_ref(fake_acr, acr_repo, "1"))  # warm-up
    fake_acr.reset_counts()
    for _ in range(lookups):
        backend.resolve_digest(_ref(fake_acr, acr_repo, "1"))
    backend_per_lookup = sum(fake_acr.counts().values()) / lookups

    # 401 + exchange + token + the retried request, every single time.
    assert naive_counts == {"exchange": lookups, "token": lookups, "metadata": 2 * lookups, "v2": 0}
    assert naive_per_lookup == 4
    assert backend_per_lookup == 1


def test_access_token_is_renewed_before_it_expires(
    fake_acr: FakeAcr,
    fake_entra: FakeEntra,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    digest = acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "1"}),)), "1")
    fake_acr.access_token_lifetime = 3.0
    client = acr_client_factory("servicePrincipal")
    ref = _ref(fake_acr, acr_repo, "1")
    assert client.resolve_digest(ref) == digest  # warm-up
    fake_acr.reset_counts()
    fake_entra.reset()

    started = time.monotonic()
    lookups = 0
    renewed_after = None
    for _ in range(400):  # bounded: ~8 s at most
        assert client.resolve_digest(ref) == digest
        lookups += 1
        if fake_acr.counts()["token"]:
            renewed_after = time.monotonic() - started
            break
        if time.monotonic() - started > 8:
            break
        time.sleep(0.02)

    assert renewed_after is not None, "the access token was never renewed"
    # Held for most of its life (not renewed at once), renewed before the registry
    # refused it: no 401 in between, one token request, no new exchange.
    assert renewed_after > 0.5
    assert fake_acr.counts() == {"exchange": 0, "token": 1, "metadata": 0, "v2": lookups}
    assert {r.status for r in fake_acr.log()} == {200}
    assert fake_entra.issued == []


def test_refresh_token_is_exchanged_again_before_it_expires(
    fake_acr: FakeAcr, acr_push: Push, acr_client_factory: MakeClient, acr_repo: str
) -> None:
    digest = acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "2"}),)), "1")
    fake_acr.access_token_lifetime = 3.0
    fake_acr.refresh_token_lifetime = 3.0
    client = acr_client_factory("workloadIdentity")
    ref = _ref(fake_acr, acr_repo, "1")
    assert client.resolve_digest(ref) == digest
    fake_acr.reset_counts()
    started = time.monotonic()
    for _ in range(400):  # bounded: ~8 s at most
        assert client.resolve_digest(ref) == digest
        if fake_acr.counts()["exchange"] or time.monotonic() - started > 8:
            break
        time.sleep(0.02)
    counts = fake_acr.counts()
    assert (counts["exchange"], counts["token"]) == (1, 1)
    assert {r.status for r in fake_acr.log() if r.kind == "v2"} == {200}


@pytest.mark.parametrize("retry_after", [7, 120])
def test_throttling_surfaces_retry_after_without_sdk_retries(
    retry_after: int,
    fake_acr: FakeAcr,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    digest = acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "3"}),)), "1")
    client = acr_client_factory("servicePrincipal")
    ref = _ref(fake_acr, acr_repo, "1")
    assert client.resolve_digest(ref) == digest
    fake_acr.reset_counts()

    fake_acr.throttle(1, retry_after=retry_after)
    started = time.monotonic()
    with pytest.raises(RegistryThrottled) as caught:
        client.resolve_digest(ref)
    assert time.monotonic() - started < 5  # nobody slept on Retry-After
    assert caught.value.retry_after == retry_after
    assert caught.value.registry == fake_acr.host
    assert fake_acr.counts()["v2"] == 1  # the 429 was not retried

    # Metadata calls go through the SDK's generated operations: same mapping.
    fake_acr.throttle(1, retry_after=retry_after, kinds=("metadata",))
    with pytest.raises(RegistryThrottled) as caught_metadata:
        client.list_tags(ref)
    assert caught_metadata.value.retry_after == retry_after
    assert client.resolve_digest(ref) == digest  # and the next lookup just works


def test_wrong_client_secret_is_an_auth_error_naming_the_identity(
    fake_acr: FakeAcr, acr_identities: AcrIdentities, acr_client_factory: MakeClient, acr_repo: str
) -> None:
    client = acr_client_factory("servicePrincipal", secret="not-the-secret")
    with pytest.raises(RegistryAuthError) as caught:
        client.resolve_digest(_ref(fake_acr, acr_repo, "1"))
    message = str(caught.value)
    assert f"service principal (client id {acr_identities.sp_client_id}" in message
    assert "AADSTS7000215" in message
    assert caught.value.identity.startswith("service principal")
    # The credential failed before anything reached the registry.
    assert fake_acr.counts() == {"exchange": 0, "token": 0, "metadata": 0, "v2": 0}


@pytest.mark.parametrize(
    ("kind", "client_attr", "label"),
    [
        ("workloadIdentity", "wi_client_id", "workload identity"),
        ("managedIdentity", "mi_client_id", "managed identity"),
    ],
)
def test_refused_identity_is_an_auth_error_naming_it(
    kind: str,
    client_attr: str,
    label: str,
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    digest = acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "4"}),)), "1")
    client = acr_client_factory(kind)
    ref = _ref(fake_acr, acr_repo, "1")
    assert client.resolve_digest(ref) == digest
    client_id = getattr(acr_identities, client_attr)
    fake_acr.deny(client_id)
    fake_acr.revoke_tokens()  # the cached token now gets 401
    fake_acr.reset_counts()
    with pytest.raises(RegistryAuthError) as caught:
        client.resolve_digest(ref)
    assert f"{label} (client id {client_id})" in str(caught.value)
    assert caught.value.identity == f"{label} (client id {client_id})"
    # 401 with the cached token, a token request refused, one re-exchange, refused again.
    assert fake_acr.counts() == {"exchange": 1, "token": 2, "metadata": 0, "v2": 1}


def test_anonymous_pull_disabled_is_an_auth_error(
    fake_acr: FakeAcr, acr_push: Push, acr_client_factory: MakeClient, acr_repo: str
) -> None:
    acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "5"}),)), "1")
    client = acr_client_factory("anonymous")
    with pytest.raises(RegistryAuthError, match="anonymous") as caught:
        client.resolve_digest(_ref(fake_acr, acr_repo, "1"))
    assert caught.value.identity == "anonymous"


def test_missing_tags_and_repositories_are_not_found(
    fake_acr: FakeAcr, acr_push: Push, acr_client_factory: MakeClient, acr_repo: str
) -> None:
    acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "6"}),)), "1")
    client = acr_client_factory("servicePrincipal")
    with pytest.raises(NotFound):
        client.resolve_digest(_ref(fake_acr, acr_repo, "missing"))
    with pytest.raises(NotFound):
        client.get_image(_ref(fake_acr, f"{acr_repo}-nope", "1"))
    with pytest.raises(NotFound):
        client.tag_info(_ref(fake_acr, acr_repo, "missing"))


def test_server_errors_and_dead_hosts_are_unavailable(
    fake_acr: FakeAcr,
    acr_tls: TestCA,
    acr_push: Push,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    digest = acr_push(acr_repo, Image(layers=(Layer.from_files({"v": "7"}),)), "1")
    client = acr_client_factory("servicePrincipal", retry_total=1)
    ref = _ref(fake_acr, acr_repo, "1")
    assert client.resolve_digest(ref) == digest
    fake_acr.reset_counts()
    fake_acr.inject(503, 2)
    with pytest.raises(RegistryUnavailable, match="503"):
        client.resolve_digest(ref)
    assert fake_acr.counts()["v2"] == 2  # one try plus the one retry allowed
    assert client.resolve_digest(ref) == digest

    dead = AcrRegistryClient(
        f"127.0.0.1:{free_port()}",
        {"identity": "anonymous"},
        connection_verify=str(acr_tls.ca_cert),
        retry_total=0,
    )
    try:
        with pytest.raises(RegistryUnavailable):
            dead.resolve_digest(ImageRef.parse(f"{dead.host}/x:1"))
    finally:
        dead.close()


def test_list_tags_follows_pages_newest_first(
    fake_acr: FakeAcr, acr_push: Push, acr_client_factory: MakeClient, acr_repo: str
) -> None:
    tags = ["a", "b", "c", "d", "e"]
    for number, tag in enumerate(tags):
        acr_push(acr_repo, Image(layers=(Layer.from_files({"n": str(number)}),)), tag)
    now = time.time()
    # Pushed in name order, but last updated in this order (oldest first):
    for age, tag in enumerate(["c", "a", "e", "b", "d"]):
        fake_acr.set_tag_time(acr_repo, tag, now - 100 + age)
    client = acr_client_factory("servicePrincipal", page_size=2)
    ref = _ref(fake_acr, acr_repo, "a")
    fake_acr.reset_counts()
    assert client.list_tags(ref) == ["d", "b", "e", "a", "c"]
    assert fake_acr.counts()["metadata"] == 3  # pages of 2, 2 and 1
    infos = client.list_tag_infos(ref, newest_first=False)
    assert [i.name for i in infos] == ["c", "a", "e", "b", "d"]
    assert all(i.digest.startswith("sha256:") and i.last_updated for i in infos)

    anonymous = acr_client_factory("anonymous", page_size=2)
    fake_acr.set_anonymous_pull(acr_repo)
    assert anonymous.list_tags(ref) == sorted(tags)  # /v2 list: name order, all pages


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/acr/v1/library%2Fhello/_tags/v1", "repository:library/hello:metadata_read"),
        ("GET", "/acr/v1/library/hello/_tags", "repository:library/hello:metadata_read"),
        ("PATCH", "/acr/v1/a%2Fb/_manifests/sha256%3Aab", "repository:a/b:metadata_write"),
        ("GET", "/acr/v1/hello", "repository:hello:metadata_read"),
        ("GET", "/acr/v1/_catalog", "registry:catalog:*"),
        ("HEAD", "/v2/a/b/manifests/1.0", "repository:a/b:pull"),
        ("GET", "/v2/a/blobs/sha256:00", "repository:a:pull"),
        ("PUT", "/v2/a/manifests/1", "repository:a:push,pull"),
        ("POST", "/v2/a/blobs/uploads/", "repository:a:push,pull"),
        ("DELETE", "/v2/a/manifests/sha256:00", "repository:a:delete"),
        ("GET", "/v2/", ""),
        ("POST", "/oauth2/token", ""),
    ],
)
def test_scope_of_each_request(method: str, path: str, scope: str) -> None:
    assert acr_scope(method, path) == scope


def test_token_expiry_reads_the_fake_acr_tokens() -> None:
    token = make_jwt({"exp": 1_900_000_000, "sub": "x"})
    payload = token.split(".")[1]
    assert "-" not in payload and "_" not in payload and len(payload) % 4 == 0
    assert token_expiry(token) == 1_900_000_000
    assert token_expiry("opaque-token") is None


def test_sdk_uploads_and_sets_manifests_through_the_fake_acr(
    fake_acr: FakeAcr,
    acr_identities: AcrIdentities,
    acr_tls: TestCA,
    acr_client_factory: MakeClient,
    acr_repo: str,
) -> None:
    """The SDK's own push path (chunked PATCH uploads, relative Locations, set_manifest)."""
    image = Image(layers=(Layer.from_files({"sdk": "pushed by azure-containerregistry\n"}),))
    credential = ClientSecretCredential(
        acr_identities.tenant_id,
        acr_identities.sp_client_id,
        acr_identities.sp_secret,
        authority=acr_identities.authority,
        disable_instance_discovery=True,
        connection_verify=str(acr_tls.ca_cert),
    )
    with ContainerRegistryClient(
        fake_acr.url, credential, connection_verify=str(acr_tls.ca_cert), retry_total=0
    ) as sdk:
        for blob in (image.layers[0].blob, image.config_bytes()):
            digest, size = sdk.upload_blob(acr_repo, io.BytesIO(blob))
            assert (digest, size) == (sha256_digest(blob), len(blob))
        pushed = sdk.set_manifest(
            acr_repo,
            io.BytesIO(image.manifest_bytes()),
            tag="sdk",
            media_type="application/vnd.oci.image.manifest.v1+json",
        )
    assert pushed == image.digest
    assert any(r.method == "PATCH" and r.status == 202 for r in fake_acr.log())

    backend = acr_client_factory("servicePrincipal")
    resolved = backend.get_image(_ref(fake_acr, acr_repo, "sdk"))
    assert resolved.digest == image.digest
    assert resolved.manifests[0].layers == image.layer_digests

"""The OCI backend and the push code against a real distribution server over real sockets.

Auth, throttling and fault cases go through ``RegistryProxy`` in front of the same registry.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import io
import tarfile
import time
from collections.abc import Callable

import httpx
import pytest

from imagedrift.core.images import Platform
from imagedrift.core.refs import ImageRef
from imagedrift.errors import (
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryThrottled,
    RegistryUnavailable,
)
from imagedrift.registry.base import Credentials
from imagedrift.registry.oci import MANIFEST_ACCEPT, OciRegistryClient
from imagedrift.registry.push import (
    BASE_DIGEST,
    BASE_NAME,
    LINUX_AMD64,
    LINUX_ARM64,
    Image,
    Index,
    Layer,
    base_marks,
    push_image,
    push_index,
)
from tests.harness.registry import Registry
from tests.harness.registry_proxy import RegistryProxy

ALICE = Credentials("alice", "s3cret", identity="secret team-a/pull-creds")


def base_image(version: str = "1", platform: Platform = LINUX_AMD64) -> Image:
    return Image(
        layers=(
            Layer.from_files({"etc/os-release": f"ID=demo\nVERSION_ID={version}\n"}),
            Layer.from_files({f"usr/lib/{platform.architecture}/libc.so": f"libc {version}"}),
            Layer.from_files({"etc/ssl/certs/ca.pem": "-----BEGIN CERTIFICATE-----\n"}),
        ),
        platform=platform,
        labels={"org.opencontainers.image.version": version},
    )


def base_index(version: str = "1") -> Index:
    return Index.of(
        base_image(version, LINUX_AMD64),
        base_image(version, LINUX_ARM64),
        annotations={"org.opencontainers.image.version": version},
    )


APP_LAYER = Layer.from_files({"app/main.py": "print('hello')\n"})


def ref(registry_host: str, repository: str, tag: str = "", digest: str = "") -> ImageRef:
    return ImageRef(registry_host, repository, tag, digest)


def test_pushed_image_reads_back_through_the_raw_api(
    registry: Registry, registry_client: OciRegistryClient, registry_repo: str
) -> None:
    image = base_image().derive(
        APP_LAYER, annotations={"org.opencontainers.image.source": "https://example.test/app"}
    )
    digest = push_image(registry_client, registry_repo, image, tag="1.0.0")

    with httpx.Client(base_url=registry.url, timeout=10) as raw:
        response = raw.get(
            f"/v2/{registry_repo}/manifests/1.0.0", headers={"Accept": MANIFEST_ACCEPT}
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
        assert response.headers["Docker-Content-Digest"] == digest == image.digest
        assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
        manifest = response.json()
        assert manifest["annotations"] == {
            "org.opencontainers.image.source": "https://example.test/app"
        }
        assert [layer["digest"] for layer in manifest["layers"]] == list(image.layer_digests)

        config = raw.get(f"/v2/{registry_repo}/blobs/{manifest['config']['digest']}").json()
        assert config["os"] == "linux" and config["architecture"] == "amd64"
        assert config["config"]["Labels"] == {"org.opencontainers.image.version": "1"}
        assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]

        blob = raw.get(f"/v2/{registry_repo}/blobs/{manifest['layers'][-1]['digest']}").content
    tar_bytes = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(tar_bytes).hexdigest() == image.layers[-1].diff_id
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.extractfile("app/main.py")
        assert member is not None and member.read() == b"print('hello')\n"


def test_multi_arch_index_reads_back_with_platforms_layers_and_labels(
    registry: Registry, registry_client: OciRegistryClient, registry_repo: str
) -> None:
    index = base_index().with_attestations()
    digest = push_index(registry_client, registry_repo, index, tag="1")

    assert registry_client.resolve_digest(ref(registry.host, registry_repo, "1")) == digest
    image = registry_client.get_image(ref(registry.host, registry_repo, "1"))

    assert image.digest == digest == index.digest
    assert image.is_index
    assert image.annotations == {"org.opencontainers.image.version": "1"}
    # The attestation entries (unknown/unknown) are left out.
    assert [str(m.platform) for m in image.manifests] == ["linux/amd64", "linux/arm64"]
    for manifest in image.manifests:
        assert manifest.platform is not None
        pushed = index.for_platform(manifest.platform)
        assert manifest.digest == pushed.digest
        assert manifest.layers == pushed.layer_digests
        assert manifest.config_digest == pushed.config_digest
        assert manifest.labels == {"org.opencontainers.image.version": "1"}
        assert manifest.created == "2024-01-01T00:00:00Z"
    amd64, arm64 = image.manifests
    assert amd64.layers[0] == arm64.layers[0]  # same content, same blob
    assert amd64.layers[1] != arm64.layers[1]  # per-architecture content


@pytest.mark.parametrize(
    "marks_on", ["index-annotations", "manifest-annotations", "labels", "nothing"]
)
def test_app_built_on_a_base_starts_with_the_base_layers(
    registry: Registry, registry_client: OciRegistryClient, registry_repo: str, marks_on: str
) -> None:
    base_digest = push_index(registry_client, f"{registry_repo}/base", base_index(), tag="1")
    base = registry_client.get_image(ref(registry.host, f"{registry_repo}/base", "1"))
    marks = base_marks(base_digest, f"{registry.host}/{registry_repo}/base:1")
    app_index = base_index().derive(
        APP_LAYER,
        annotations=marks if marks_on == "index-annotations" else None,
        manifest_annotations=marks if marks_on == "manifest-annotations" else None,
        labels=marks if marks_on == "labels" else None,
    )
    push_index(registry_client, f"{registry_repo}/app", app_index, tag="1.0.0")

    app = registry_client.get_image(ref(registry.host, f"{registry_repo}/app", "1.0.0"))
    for platform in (LINUX_AMD64, LINUX_ARM64):
        base_manifest, app_manifest = base.for_platform(platform), app.for_platform(platform)
        assert base_manifest is not None and app_manifest is not None
        assert app_manifest.layers[: len(base_manifest.layers)] == base_manifest.layers
        assert app_manifest.layers[len(base_manifest.layers) :] == (APP_LAYER.digest,)
        in_manifest = app_manifest.annotations.get(BASE_DIGEST)
        in_labels = app_manifest.labels.get(BASE_DIGEST)
        assert in_manifest == (base_digest if marks_on == "manifest-annotations" else None)
        assert in_labels == (base_digest if marks_on == "labels" else None)
    assert app.annotations.get(BASE_DIGEST) == (
        base_digest if marks_on == "index-annotations" else None
    )
    if marks_on == "index-annotations":
        assert app.annotations[BASE_NAME] == f"{registry.host}/{registry_repo}/base:1"


def test_republishing_a_tag_moves_it_to_a_new_digest(
    registry: Registry, registry_client: OciRegistryClient, registry_repo: str
) -> None:
    original = base_image("1")
    patched = original.with_layer(
        1, Layer.from_files({"usr/lib/amd64/libc.so": "libc 1 + CVE fix"})
    )
    tag = ref(registry.host, registry_repo, "stable")

    first = push_image(registry_client, registry_repo, original, tag="stable")
    assert registry_client.resolve_digest(tag) == first
    second = push_image(registry_client, registry_repo, patched, tag="stable")

    assert second != first
    assert registry_client.resolve_digest(tag) == second
    # Only the changed layer differs; the old manifest stays reachable by digest.
    now = registry_client.get_image(tag).manifests[0]
    assert now.layers[0] == original.layer_digests[0] and now.layers[1] != original.layer_digests[1]
    assert (
        registry_client.get_image(tag.with_digest(first)).manifests[0].layers
        == original.layer_digests
    )


def test_tag_list_follows_pagination(
    registry_client: OciRegistryClient, registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    image = base_image()
    tags = [f"1.{minor}.0" for minor in range(7)]
    for tag in tags:
        push_image(registry_client, registry_repo, image, tag=tag)
    # distribution 2.8 ignores ``n`` for tags; the proxy pages like Docker Hub and GHCR do.
    registry_proxy.paginate_tags(3)
    with OciRegistryClient(registry_proxy.host, scheme="http", page_size=100) as client:
        listed = client.list_tags(ref(registry_proxy.host, registry_repo))
    assert listed == sorted(tags)
    pages = [r for r in registry_proxy.requests if r.path.endswith("/tags/list")]
    assert [r.query for r in pages] == ["n=100", "n=3&last=1.2.0", "n=3&last=1.5.0"]


def test_tag_list_pages_are_bounded(
    registry_client: OciRegistryClient, registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    for minor in range(5):
        push_image(registry_client, registry_repo, base_image(), tag=f"1.{minor}.0")
    registry_proxy.paginate_tags(1)
    with (
        OciRegistryClient(registry_proxy.host, scheme="http", max_pages=3) as client,
        pytest.raises(RegistryError, match="more than 3 pages"),
    ):
        client.list_tags(ref(registry_proxy.host, registry_repo))
    assert len(registry_proxy.requests) == 3


def test_missing_tag_and_repository_are_not_found(
    registry: Registry, registry_client: OciRegistryClient, registry_repo: str
) -> None:
    with pytest.raises(NotFound):
        registry_client.resolve_digest(ref(registry.host, registry_repo, "nope"))
    push_image(registry_client, registry_repo, base_image(), tag="1")
    with pytest.raises(NotFound):
        registry_client.get_image(ref(registry.host, registry_repo, "2"))


def test_each_lookup_is_one_registry_request(
    registry: Registry, registry_client: OciRegistryClient, registry_repo: str
) -> None:
    push_image(registry_client, registry_repo, base_image(), tag="1")
    mark = registry.mark()
    for _ in range(5):
        registry_client.resolve_digest(ref(registry.host, registry_repo, "1"))
    served = registry.requests_since(mark)
    assert [(entry.method, entry.path, entry.status) for entry in served] == [
        ("HEAD", f"/v2/{registry_repo}/manifests/1", 200)
    ] * 5


def test_bearer_tokens_are_fetched_once_and_sent_proactively(
    registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    registry_proxy.require_bearer({"alice": "s3cret"})
    seen: list[tuple[str, str, str, int]] = []
    client = OciRegistryClient(
        registry_proxy.host,
        ALICE,
        scheme="http",
        on_request=lambda host, method, path, status: seen.append((host, method, path, status)),
    )
    with client:
        digest = push_image(client, registry_repo, base_image(), tag="1")
        registry_proxy.reset_counts()
        seen.clear()
        tag = ref(registry_proxy.host, registry_repo, "1")
        for _ in range(5):
            assert client.resolve_digest(tag) == digest

    token_requests = registry_proxy.token_requests
    assert token_requests == [
        {
            "service": "imagedrift-test-registry",
            "scope": f"repository:{registry_repo}:pull",
            "user": "alice",
        }
    ]
    lookups = registry_proxy.requests
    # First lookup of the pull scope: token first (realm already known from the push),
    # then every lookup is a single authorised HEAD; no 401 round trips.
    assert [(r.method, r.status, r.authorization) for r in lookups] == [("HEAD", 200, "bearer")] * 5
    assert len(seen) == 6 and seen[0][2] == "/token"


def test_a_revoked_token_is_replaced_once(
    registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    registry_proxy.require_bearer({"alice": "s3cret"})
    with OciRegistryClient(registry_proxy.host, ALICE, scheme="http") as client:
        digest = push_image(client, registry_repo, base_image(), tag="1")
        tag = ref(registry_proxy.host, registry_repo, "1")
        client.resolve_digest(tag)
        registry_proxy.revoke_tokens()
        registry_proxy.reset_counts()
        assert client.resolve_digest(tag) == digest
    assert [r.status for r in registry_proxy.requests] == [401, 200]
    assert len(registry_proxy.token_requests) == 1


def test_wrong_password_names_the_identity(
    registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    registry_proxy.require_bearer({"alice": "s3cret"})
    wrong = Credentials("alice", "guess", identity="secret team-a/pull-creds")
    with (
        OciRegistryClient(registry_proxy.host, wrong, scheme="http") as client,
        pytest.raises(RegistryAuthError) as caught,
    ):
        client.resolve_digest(ref(registry_proxy.host, registry_repo, "1"))
    assert caught.value.identity == "secret team-a/pull-creds"
    assert "secret team-a/pull-creds" in str(caught.value)
    assert caught.value.registry == registry_proxy.host
    assert len(registry_proxy.token_requests) == 1  # an auth failure is not retried


def test_basic_auth_challenge(registry_proxy: RegistryProxy, registry_repo: str) -> None:
    registry_proxy.require_basic({"alice": "s3cret"})
    with OciRegistryClient(registry_proxy.host, ALICE, scheme="http") as client:
        digest = push_image(client, registry_repo, base_image(), tag="1")
        registry_proxy.reset_counts()
        assert client.resolve_digest(ref(registry_proxy.host, registry_repo, "1")) == digest
    # Basic credentials are sent up front once the host asked for them.
    assert [(r.status, r.authorization) for r in registry_proxy.requests] == [(200, "basic")]

    anonymous = OciRegistryClient(registry_proxy.host, scheme="http")
    with anonymous, pytest.raises(RegistryAuthError) as caught:
        anonymous.resolve_digest(ref(registry_proxy.host, registry_repo, "1"))
    assert caught.value.identity == "anonymous"


def proxy_client(
    proxy: RegistryProxy, sleeps: list[float], *, backoff: float = 0.5
) -> OciRegistryClient:
    return OciRegistryClient(
        proxy.host,
        scheme="http",
        sleep=sleeps.append,
        max_attempts=3,
        max_retry_after=10,
        backoff=backoff,
    )


def test_throttling_is_retried_after_the_requested_delay(
    registry_client: OciRegistryClient, registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    digest = push_image(registry_client, registry_repo, base_image(), tag="1")
    registry_proxy.fail_next(2, status=429, retry_after="3")
    sleeps: list[float] = []
    with proxy_client(registry_proxy, sleeps) as client:
        assert client.resolve_digest(ref(registry_proxy.host, registry_repo, "1")) == digest
    assert sleeps == [3.0, 3.0]
    assert [r.status for r in registry_proxy.requests] == [429, 429, 200]


@pytest.mark.parametrize(
    ("retry_after", "expected_requests"),
    [
        ("2", 3),  # under the cap: retried, then surfaced
        ("600", 1),  # over the cap: surfaced at once for the caller to wait
        ("http-date", 1),
    ],
)
def test_persistent_throttling_surfaces_as_throttled(
    registry_client: OciRegistryClient,
    registry_proxy: RegistryProxy,
    registry_repo: str,
    retry_after: str,
    expected_requests: int,
) -> None:
    push_image(registry_client, registry_repo, base_image(), tag="1")
    if retry_after == "http-date":
        retry_after = email.utils.formatdate(time.time() + 120, usegmt=True)
    registry_proxy.fail_next(10, status=429, retry_after=retry_after)
    sleeps: list[float] = []
    with proxy_client(registry_proxy, sleeps) as client, pytest.raises(RegistryThrottled) as caught:
        client.resolve_digest(ref(registry_proxy.host, registry_repo, "1"))
    assert len(registry_proxy.requests) == expected_requests
    assert len(sleeps) == expected_requests - 1
    expected_wait = 120.0 if retry_after.endswith("GMT") else float(retry_after)
    assert caught.value.retry_after == pytest.approx(expected_wait, abs=2)


def test_server_errors_are_retried_with_backoff_then_surface(
    registry_client: OciRegistryClient, registry_proxy: RegistryProxy, registry_repo: str
) -> None:
    digest = push_image(registry_client, registry_repo, base_image(), tag="1")
    tag = ref(registry_proxy.host, registry_repo, "1")
    sleeps: list[float] = []
    with proxy_client(registry_proxy, sleeps, backoff=1.0) as client:
        registry_proxy.fail_next(1, status=503)
        assert client.resolve_digest(tag) == digest
        assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0

        sleeps.clear()
        registry_proxy.fail_next(5, status=503)
        with pytest.raises(RegistryUnavailable):
            client.resolve_digest(tag)
    assert len(sleeps) == 2 and 1.0 <= sleeps[1] <= 2.0  # exponential, jittered


def test_outage_is_unavailable_and_recovery_works_again(
    registry_factory: Callable[[], Registry], registry_repo: str
) -> None:
    registry = registry_factory()
    sleeps: list[float] = []
    with registry.client(sleep=sleeps.append) as client:
        digest = push_image(client, registry_repo, base_image(), tag="1")
        tag = ref(registry.host, registry_repo, "1")
        port = registry.port

        registry.stop()
        with pytest.raises(RegistryUnavailable) as caught:
            client.resolve_digest(tag)
        assert caught.value.registry == registry.host
        assert len(sleeps) == 2  # three attempts, then the caller decides

        registry.start()
        assert registry.port == port
        assert client.resolve_digest(tag) == digest  # same storage: the image survived


def test_request_budget_refuses_before_sending(registry: Registry, registry_repo: str) -> None:
    from imagedrift.registry.budget import RequestBudget

    with registry.client() as publisher:
        push_image(
            publisher, registry_repo, Image(layers=(Layer.from_files({"f": "budget"}),)), "1"
        )
    now = [0.0]
    budget = RequestBudget(60, burst=2, clock=lambda: now[0])
    client = registry.client(budget=budget)
    try:
        ref = ImageRef.parse(f"{registry.host}/{registry_repo}:1")
        client.resolve_digest(ref)
        client.resolve_digest(ref)
        mark = registry.mark()
        with pytest.raises(RegistryThrottled) as refused:
            client.resolve_digest(ref)
        # Come back when a lookup's worth is allowed (4 requests, capped by the burst of 2).
        assert refused.value.retry_after == pytest.approx(2.0)
        assert registry.requests_since(mark, path=registry_repo) == [], "a refused request was sent"
        now[0] = 1.0
        assert client.resolve_digest(ref).startswith("sha256:")
    finally:
        client.close()

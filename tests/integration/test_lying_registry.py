"""The registry backends against registries that lie, over real sockets on loopback.

Each test serves one lie and asserts the reason the client gives and, where the lie is
size, that the process's peak memory grew far less than the body served: the client stops
reading at its limit instead of holding the body first and judging it after.
"""

from __future__ import annotations

import gc
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from imagedrift.core.refs import ImageRef
from imagedrift.errors import RegistryError
from imagedrift.registry.acr import AcrRegistryClient
from imagedrift.registry.base import Credentials
from imagedrift.registry.limits import ReadLimits
from imagedrift.registry.oci import OciRegistryClient
from imagedrift.registry.referrers import list_referrers
from tests.harness.acr_server import FakeAcr
from tests.harness.lying_registry import OCI_INDEX, OCI_MANIFEST, LyingRegistry, MiB, digest_of
from tests.harness.tlsca import TestCA

SERVED = 200 * MiB
GROWTH_BOUND = 64 * MiB  # generous, and still far below what was served
ALICE = Credentials("alice", "s3cret", identity="secret team-a/pull-creds")
Read = Callable[[OciRegistryClient, ImageRef], object]
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.M)
    assert match, f"no {field} in /proc/self/status"
    return int(match.group(1))


@contextmanager
def peak_rss_growth() -> Iterator[list[int]]:
    """Bytes the process's peak RSS rose above its RSS at entry, measured at exit.

    Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so a peak an
    earlier test reached cannot hide this one's.
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    growth: list[int] = []
    try:
        yield growth
    finally:
        growth.append((_status_kib("VmHWM") - before) * 1024)


def client(
    registry: LyingRegistry, credentials: Credentials | None = None, **limits: float
) -> OciRegistryClient:
    return OciRegistryClient(
        registry.host,
        credentials or Credentials(),
        scheme="http",
        max_attempts=1,
        limits=ReadLimits(**limits),  # type: ignore[arg-type]
    )


def ref(registry: LyingRegistry, tag: str = "", digest: str = "") -> ImageRef:
    return ImageRef(registry.host, "lies/app", tag, digest)


@pytest.mark.parametrize(
    ("declared", "reason"),
    [
        # h11 reads what was declared and no further: the rest never reaches us.
        (1024, "content does not match its digest"),
        # Declared past the limit: refused before a byte of the body is read.
        (300 * MiB, "body is more than the 4194304 bytes allowed (IMAGEDRIFT_MAX_MANIFEST_BYTES)"),
    ],
    ids=["claims-1KiB", "claims-300MiB"],
)
def test_an_oversized_body_with_a_false_content_length(
    lying_registry: LyingRegistry, declared: int, reason: str
) -> None:
    digest = digest_of(MANIFEST)
    lying_registry.oversized(f"/v2/lies/app/manifests/{digest}", SERVED, declared=declared)
    with (
        client(lying_registry) as oci,
        peak_rss_growth() as growth,
        pytest.raises(RegistryError, match=re.escape(reason)),
    ):
        oci.get_manifest(ref(lying_registry, digest=digest))
    assert growth[0] < GROWTH_BOUND, f"peak RSS grew {growth[0] / MiB:.1f} MiB"


@pytest.mark.parametrize(
    ("path", "read", "reason"),
    [
        (
            "/v2/lies/app/manifests/1",
            lambda oci, r: oci.get_manifest(r.with_tag("1")),
            "GET /v2/lies/app/manifests/1: body is more than the 4194304 bytes allowed "
            "(IMAGEDRIFT_MAX_MANIFEST_BYTES)",
        ),
        (
            f"/v2/lies/app/blobs/{digest_of(b'report')}",
            lambda oci, r: oci.get_blob(r, digest_of(b"report")),
            "body is more than the 33554432 bytes allowed (IMAGEDRIFT_MAX_BLOB_BYTES)",
        ),
        (
            "/v2/lies/app/tags/list",
            lambda oci, r: oci.list_tags(r),
            "GET /v2/lies/app/tags/list: body is more than the 4194304 bytes allowed "
            "(IMAGEDRIFT_MAX_DOCUMENT_BYTES)",
        ),
        (
            f"/v2/lies/app/referrers/{digest_of(MANIFEST)}",
            lambda oci, r: list_referrers(oci, r.with_digest(digest_of(MANIFEST))),
            "body is more than the 4194304 bytes allowed (IMAGEDRIFT_MAX_DOCUMENT_BYTES)",
        ),
    ],
    ids=["manifest", "blob", "tag-list", "referrers"],
)
def test_an_oversized_chunked_body_without_content_length_is_cut_at_the_limit(
    lying_registry: LyingRegistry, path: str, read: Read, reason: str
) -> None:
    lying_registry.oversized(path, SERVED, declared=None)
    with (
        client(lying_registry) as oci,
        peak_rss_growth() as growth,
        pytest.raises(RegistryError, match=re.escape(reason)),
    ):
        read(oci, ref(lying_registry))
    assert growth[0] < GROWTH_BOUND, f"peak RSS grew {growth[0] / MiB:.1f} MiB"


def test_an_oversized_token_answer_is_cut_at_the_limit(lying_registry: LyingRegistry) -> None:
    lying_registry.put_manifest("lies/app", MANIFEST, tag="1")
    lying_registry.require_bearer()
    lying_registry.oversized("/token", SERVED, declared=None)
    with (
        client(lying_registry) as oci,
        peak_rss_growth() as growth,
        pytest.raises(RegistryError, match=r"GET /token: body is more than the 4194304"),
    ):
        oci.get_manifest(ref(lying_registry, "1"))
    assert growth[0] < GROWTH_BOUND, f"peak RSS grew {growth[0] / MiB:.1f} MiB"


@pytest.mark.parametrize("what", ["manifest-by-digest", "manifest-by-tag", "blob"])
def test_content_that_does_not_match_its_digest_is_refused(
    lying_registry: LyingRegistry, what: str
) -> None:
    digest = lying_registry.put_manifest("lies/app", MANIFEST, tag="1")
    blob = lying_registry.put_blob("lies/app", b"payload")
    call: Callable[[], object]
    with client(lying_registry) as oci:
        if what == "manifest-by-digest":
            lying_registry.wrong_digest(f"/v2/lies/app/manifests/{digest}")
            call = lambda: oci.get_manifest(ref(lying_registry, digest=digest))  # noqa: E731
        elif what == "manifest-by-tag":
            lying_registry.wrong_digest("/v2/lies/app/manifests/1")
            call = lambda: oci.get_manifest(ref(lying_registry, "1"))  # noqa: E731
        else:
            lying_registry.wrong_digest(f"/v2/lies/app/blobs/{blob}")
            call = lambda: oci.get_blob(ref(lying_registry), blob)  # noqa: E731
        with pytest.raises(RegistryError, match="content does not match its digest"):
            call()


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_a_blob_redirected_to_another_host_reaches_it_without_credentials(
    lying_registry: LyingRegistry, lying_storage: LyingRegistry, scheme: str
) -> None:
    if scheme == "basic":
        lying_registry.require_basic(ALICE.username, ALICE.password)
    else:
        lying_registry.require_bearer()
    data = b'{"report": "clean"}'
    digest = lying_registry.put_blob("lies/app", data)
    storage_path = f"/storage/{digest}"
    lying_storage.put_document(storage_path, data, "application/octet-stream")
    lying_registry.redirect(f"/v2/lies/app/blobs/{digest}", lying_storage.url + storage_path)
    with client(lying_registry, ALICE) as oci:
        assert oci.get_blob(ref(lying_registry), digest) == data
    sent_to_registry = {seen.authorization.split(" ")[0] for seen in lying_registry.seen}
    assert scheme.capitalize() in sent_to_registry  # credentials were in play
    assert [(s.path, s.authorization) for s in lying_storage.seen] == [(storage_path, "")]


def test_a_trickled_body_is_cut_off_at_the_deadline(lying_registry: LyingRegistry) -> None:
    lying_registry.trickle("/v2/lies/app/manifests/1", size=300)  # five minutes of it
    with client(lying_registry, body_seconds=2.0) as oci:
        started = time.monotonic()
        with pytest.raises(
            RegistryError, match=r"body took more than the 2 s allowed .*IMAGEDRIFT_MAX_BODY"
        ):
            oci.get_manifest(ref(lying_registry, "1"))
        elapsed = time.monotonic() - started
    # About 3 s: the deadline plus one chunk's wait; the margin is for a busy machine.
    assert elapsed < 10.0, f"took {elapsed:.1f}s"  # the trickle would last 300 s


def _index(children: int) -> bytes:
    entry = {"mediaType": OCI_MANIFEST, "size": 1, "platform": {"os": "linux"}}
    manifests = [{**entry, "digest": f"sha256:{i:064x}"} for i in range(children)]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


def test_an_index_of_100000_children_is_refused_before_any_child_is_read(
    lying_registry: LyingRegistry,
) -> None:
    index = _index(100_000)
    assert len(index) > 4 * MiB  # so the default byte limit alone refuses it
    lying_registry.put_manifest("lies/app", index, tag="1", media_type=OCI_INDEX)
    with (
        client(lying_registry) as oci,
        pytest.raises(RegistryError, match="more than the 4194304 bytes allowed"),
    ):
        oci.get_image(ref(lying_registry, "1"))
    # With room for its bytes, the count of children refuses it, before any is read.
    with (
        client(lying_registry, manifest_bytes=64 * MiB) as oci,
        pytest.raises(
            RegistryError,
            match=r"index .* lists 100000 entries, more than the 1000 allowed "
            r"\(IMAGEDRIFT_MAX_INDEX_CHILDREN\)",
        ),
    ):
        oci.get_image(ref(lying_registry, "1"))
    assert lying_registry.seen_paths() == ["/v2/lies/app/manifests/1"] * 2


def test_more_referrers_than_the_limit_are_refused_before_any_is_read(
    lying_registry: LyingRegistry,
) -> None:
    digest = lying_registry.put_manifest("lies/app", MANIFEST, tag="1")
    listed = [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 1} for i in range(600)
    ]
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": listed}
    path = f"/v2/lies/app/referrers/{digest}"
    lying_registry.put_document(path, json.dumps(document).encode(), OCI_INDEX)
    with (
        client(lying_registry) as oci,
        pytest.raises(
            RegistryError,
            match=r"referrers API of .* lists 600 entries, more than the 500 allowed "
            r"\(IMAGEDRIFT_MAX_REFERRERS\)",
        ),
    ):
        list_referrers(oci, ref(lying_registry, digest=digest))
    assert lying_registry.seen_paths() == [path]


# -- the ACR backend, against the fake ACR told to lie -------------------------------------


AcrRead = Callable[[AcrRegistryClient, ImageRef], object]


@pytest.mark.parametrize(
    ("kind", "read", "reason"),
    [
        (
            "v2",
            lambda acr, r: acr.get_manifest(r),
            r"GET .*@1: body is more than the 4194304 bytes allowed "
            r"\(IMAGEDRIFT_MAX_MANIFEST_BYTES\)",
        ),
        (
            "v2",
            lambda acr, r: acr.get_blob(r, digest_of(b"x")),
            r"body is more than the 33554432 bytes allowed \(IMAGEDRIFT_MAX_BLOB_BYTES\)",
        ),
        (
            "metadata",
            lambda acr, r: acr.list_tags(r),
            r"/_tags\?orderby=timedesc.*: body is more than the 4194304 bytes allowed "
            r"\(IMAGEDRIFT_MAX_DOCUMENT_BYTES\)",
        ),
        (
            "exchange",
            lambda acr, r: acr.get_manifest(r),
            r"getting an ACR refresh token: body is more than the 4194304 bytes allowed",
        ),
    ],
    ids=["manifest", "blob", "tag-list", "token-exchange"],
)
def test_an_oversized_chunked_acr_answer_is_cut_at_the_limit(
    fake_acr: FakeAcr,
    acr_client_factory: Callable[..., AcrRegistryClient],
    acr_repo: str,
    kind: str,
    read: AcrRead,
    reason: str,
) -> None:
    acr = acr_client_factory("servicePrincipal")
    fake_acr.inject_body(SERVED, kinds=(kind,))
    with peak_rss_growth() as growth, pytest.raises(RegistryError, match=reason):
        read(acr, ImageRef(fake_acr.host, acr_repo, "1"))
    assert growth[0] < GROWTH_BOUND, f"peak RSS grew {growth[0] / MiB:.1f} MiB"


def test_a_trickled_acr_body_is_cut_off_at_the_deadline(
    fake_acr: FakeAcr, acr_client_factory: Callable[..., AcrRegistryClient], acr_repo: str
) -> None:
    acr = acr_client_factory("servicePrincipal", limits=ReadLimits(body_seconds=2.0))
    fake_acr.inject_body(300, trickle=True)  # five minutes of it
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"body took more than the 2 s allowed"):
        acr.get_blob(ImageRef(fake_acr.host, acr_repo, "1"), digest_of(b"x"))
    elapsed = time.monotonic() - started
    assert elapsed < 10.0, f"took {elapsed:.1f}s"  # the trickle would last 300 s


def test_an_acr_blob_redirected_to_storage_reaches_it_without_a_token(
    fake_acr: FakeAcr,
    acr_tls: TestCA,
    acr_client_factory: Callable[..., AcrRegistryClient],
    acr_repo: str,
) -> None:
    storage = LyingRegistry("127.0.0.1", tls=acr_tls.server_context())  # another port
    try:
        acr = acr_client_factory("servicePrincipal")
        data = b'{"report": "clean"}'
        digest = digest_of(data)
        storage.put_document(f"/storage/{digest}", data, "application/octet-stream")
        location = f"{storage.url}/storage/{digest}?sig=x"
        fake_acr.inject(307, headers={"Location": location}, kinds=("v2",))
        assert acr.get_blob(ImageRef(fake_acr.host, acr_repo, "1"), digest) == data
        assert acr.token_stats.access_tokens == 1  # the registry was sent a token
        assert [(s.path, s.authorization) for s in storage.seen] == [(f"/storage/{digest}", "")]
    finally:
        storage.close()


def test_an_acr_redirect_to_plain_http_is_refused(
    fake_acr: FakeAcr,
    acr_client_factory: Callable[..., AcrRegistryClient],
    acr_repo: str,
    lying_storage: LyingRegistry,
) -> None:
    acr = acr_client_factory("servicePrincipal")
    digest = digest_of(b"x")
    fake_acr.inject(307, headers={"Location": f"{lying_storage.url}/b"}, kinds=("v2",))
    with pytest.raises(RegistryError, match=r"redirect to http://127\.0\.0\.2:\d+ refused"):
        acr.get_blob(ImageRef(fake_acr.host, acr_repo, "1"), digest)
    assert lying_storage.seen == []

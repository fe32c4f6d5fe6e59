"""Read limits and the redirect rule: the pure parts as tables, the rule through a transport."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator

import httpx
import pytest

from imagedrift.core.refs import ImageRef
from imagedrift.errors import RegistryError
from imagedrift.registry.base import Credentials
from imagedrift.registry.limits import (
    DEFAULT_LIMITS,
    ERROR_BODY_BYTES,
    ReadLimits,
    ReadRefused,
    read_body,
    read_bounded,
)
from imagedrift.registry.manifests import OCI_INDEX, OCI_MANIFEST, resolve_image
from imagedrift.registry.oci import OciRegistryClient
from imagedrift.registry.referrers import list_referrers


def ticking(*times: float) -> Iterator[float]:
    return iter(times)


@pytest.mark.parametrize(
    ("label", "chunks", "max_bytes", "times", "expected"),
    [
        ("under the limit", [b"ab", b"cd"], 5, (0, 0, 0), b"abcd"),
        ("exactly the limit", [b"ab", b"cd"], 4, (0, 0, 0), b"abcd"),
        ("nothing at all", [], 4, (0,), b""),
        ("one byte over", [b"ab", b"cde"], 4, (0, 0, 0), "body is more than the 4 bytes allowed"),
        ("one chunk over", [b"abcdef"], 4, (0, 0), "body is more than the 4 bytes allowed"),
        (
            "past the deadline",
            [b"a", b"b", b"c"],
            10,
            (0.0, 1.0, 2.5, 3.0),
            "body took more than the 2 s allowed (2 bytes by then; IMAGEDRIFT_MAX_BODY_SECONDS)",
        ),
        ("just within the deadline", [b"a", b"b"], 10, (0.0, 1.0, 2.0), b"ab"),
    ],
)
def test_read_bounded(
    label: str, chunks: list[bytes], max_bytes: int, times: tuple[float, ...], expected: object
) -> None:
    clock = ticking(*times)
    if isinstance(expected, bytes):
        got = read_bounded(chunks, max_bytes=max_bytes, seconds=2.0, clock=lambda: next(clock))
        assert got == expected, label
    else:
        with pytest.raises(ReadRefused) as refused:
            read_bounded(chunks, max_bytes=max_bytes, seconds=2.0, clock=lambda: next(clock))
        assert str(refused.value) == expected, label


def test_read_bounded_stops_pulling_chunks_at_the_limit() -> None:
    pulled = 0

    def endless() -> Iterator[bytes]:
        nonlocal pulled
        for chunk in itertools.repeat(b"x" * 1000, 1_000_000):
            pulled += 1
            yield chunk

    with pytest.raises(ReadRefused, match="more than the 5000 bytes allowed \\(SETTING\\)"):
        read_bounded(endless(), max_bytes=5000, seconds=30, clock=lambda: 0.0, setting="SETTING")
    assert pulled == 6  # the chunk that crossed the limit, and not one more


def untouchable() -> Iterator[bytes]:
    raise AssertionError("the body was read")
    yield b""  # pragma: no cover


BIG = ERROR_BODY_BYTES + 1


@pytest.mark.parametrize(
    ("label", "headers", "success", "chunks", "expected"),
    [
        ("a success within its cap", {}, True, [b"{}"], b"{}"),
        (
            "declared past the cap: refused unread",
            {"Content-Length": "11"},
            True,
            None,
            "body is more than the 10 bytes allowed (CAP)",
        ),
        ("declared within the cap", {"Content-Length": "2"}, True, [b"{}"], b"{}"),
        (
            "a coding we did not ask for",
            {"Content-Encoding": "gzip"},
            True,
            None,
            "answered Content-Encoding 'gzip', not identity",
        ),
        ("identity named explicitly", {"Content-Encoding": "identity"}, True, [b"{}"], b"{}"),
        ("an error's words are kept", {}, False, [b'{"errors":[]}'], b'{"errors":[]}'),
        ("an error may be larger than a success's cap", {}, False, [b"e" * 20], b"e" * 20),
        ("an error past its own cap is dropped", {}, False, [b"e" * BIG], b""),
        (
            "an error declared past its cap is dropped unread",
            {"Content-Length": str(BIG)},
            False,
            None,
            b"",
        ),
        ("an error in another coding is dropped", {"Content-Encoding": "br"}, False, None, b""),
    ],
)
def test_read_body(
    label: str,
    headers: dict[str, str],
    success: bool,
    chunks: list[bytes] | None,
    expected: object,
) -> None:
    body = untouchable() if chunks is None else iter(chunks)
    if isinstance(expected, bytes):
        got = read_body(
            body, headers=headers, success=success, cap=(10, "CAP"), seconds=30, clock=lambda: 0
        )
        assert got == expected, label
    else:
        with pytest.raises(ReadRefused) as refused:
            read_body(
                body, headers=headers, success=success, cap=(10, "CAP"), seconds=30, clock=lambda: 0
            )
        assert str(refused.value) == expected, label


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, DEFAULT_LIMITS),
        ({"IMAGEDRIFT_MAX_MANIFEST_BYTES": "1024"}, ReadLimits(manifest_bytes=1024)),
        ({"IMAGEDRIFT_MAX_BODY_SECONDS": "2.5"}, ReadLimits(body_seconds=2.5)),
        (
            {"IMAGEDRIFT_MAX_INDEX_CHILDREN": "10", "IMAGEDRIFT_MAX_REFERRERS": " 20 "},
            ReadLimits(index_children=10, referrers=20),
        ),
        ({"IMAGEDRIFT_MAX_BLOB_BYTES": ""}, DEFAULT_LIMITS),
        ({"IMAGEDRIFT_MAX_BLOB_BYTES": "lots"}, "IMAGEDRIFT_MAX_BLOB_BYTES='lots' is not a number"),
        (
            {"IMAGEDRIFT_MAX_CONFIG_BYTES": "1.5"},
            "IMAGEDRIFT_MAX_CONFIG_BYTES='1.5' is not a number",
        ),
        ({"IMAGEDRIFT_MAX_DOCUMENT_BYTES": "0"}, "IMAGEDRIFT_MAX_DOCUMENT_BYTES must be positive"),
        ({"IMAGEDRIFT_MAX_BODY_SECONDS": "-1"}, "IMAGEDRIFT_MAX_BODY_SECONDS must be positive"),
    ],
)
def test_limits_from_the_environment(environ: dict[str, str], expected: object) -> None:
    if isinstance(expected, ReadLimits):
        assert ReadLimits.from_env(environ) == expected
    else:
        with pytest.raises(ValueError) as error:
            ReadLimits.from_env(environ)
        assert str(error.value) == expected


def test_defaults() -> None:
    assert (
        ReadLimits(
            manifest_bytes=4 * 1024 * 1024,
            config_bytes=16 * 1024 * 1024,
            blob_bytes=32 * 1024 * 1024,
            document_bytes=4 * 1024 * 1024,
            body_seconds=30.0,
            index_children=1000,
            referrers=500,
        )
        == DEFAULT_LIMITS
    )


def test_an_index_past_the_child_limit_is_refused_before_any_child_is_read() -> None:
    children = [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 1} for i in range(3)
    ]
    index = json.dumps({"mediaType": OCI_INDEX, "manifests": children}).encode()
    asked: list[ImageRef] = []

    def get_manifest(ref: ImageRef) -> tuple[bytes, str, str]:
        asked.append(ref)
        return index, OCI_INDEX, "sha256:" + hashlib.sha256(index).hexdigest()

    def no_config(ref: ImageRef, digest: str) -> bytes:
        raise AssertionError("no config is read")

    ref = ImageRef("r.example", "app", "1")
    with pytest.raises(
        RegistryError,
        match=r"r\.example: index .* lists 3 entries, more than the 2 allowed "
        r"\(IMAGEDRIFT_MAX_INDEX_CHILDREN\)",
    ):
        resolve_image(
            ref, get_manifest=get_manifest, get_config=no_config, host="r.example", max_children=2
        )
    assert asked == [ref]


# -- the redirect rule ------------------------------------------------------------------------

BLOB = b"blob"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
ALICE = Credentials("alice", "s3cret", identity="secret ns/pull")


def follow(base: str, hops: dict[str, str]) -> tuple[list[tuple[str, bool]], bytes | str]:
    """GET the blob from a basic-auth registry at ``base`` whose URLs redirect as ``hops``
    says; return each request after the challenge as (url, sent Authorization) and the
    blob or the error."""
    seen: list[tuple[str, bool]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        authorization = "Authorization" in request.headers
        if request.url.host == "reg.example" and not authorization and not seen:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="reg"'})
        seen.append((url, authorization))
        if url in hops:
            return httpx.Response(307, headers={"Location": hops[url]})
        return httpx.Response(200, content=BLOB)

    scheme, _, host = base.partition("://")
    client = OciRegistryClient(
        host, ALICE, scheme=scheme, transport=httpx.MockTransport(handler), max_attempts=1
    )
    with client:
        try:
            return seen, client.get_blob(ImageRef(host, "app"), DIGEST)
        except RegistryError as exc:
            return seen, str(exc)


BLOB_URL = f"https://reg.example/v2/app/blobs/{DIGEST}"


@pytest.mark.parametrize(
    ("label", "base", "hops", "expected_seen", "expected"),
    [
        ("no redirect", "https://reg.example", {}, [(BLOB_URL, True)], BLOB),
        (
            "within the registry's origin: credentials kept",
            "https://reg.example",
            {BLOB_URL: "/storage/blob"},
            [(BLOB_URL, True), ("https://reg.example/storage/blob", True)],
            BLOB,
        ),
        (
            "to another host: none sent",
            "https://reg.example",
            {BLOB_URL: "https://storage.example/blob?sig=x"},
            [(BLOB_URL, True), ("https://storage.example/blob?sig=x", False)],
            BLOB,
        ),
        (
            "to another port of the same host: none sent",
            "https://reg.example",
            {BLOB_URL: "https://reg.example:8443/blob"},
            [(BLOB_URL, True), ("https://reg.example:8443/blob", False)],
            BLOB,
        ),
        (
            "to http on the same host: refused",
            "https://reg.example",
            {BLOB_URL: "http://reg.example/blob"},
            [(BLOB_URL, True)],
            "redirect to http://reg.example refused",
        ),
        (
            "away and back again: none sent on the way back either",
            "https://reg.example",
            {
                BLOB_URL: "https://storage.example/blob",
                "https://storage.example/blob": "https://reg.example/again",
            },
            [
                (BLOB_URL, True),
                ("https://storage.example/blob", False),
                ("https://reg.example/again", False),
            ],
            BLOB,
        ),
        (
            "a plain-http registry may redirect to plain http, without credentials",
            "http://reg.example",
            {BLOB_URL.replace("https", "http"): "http://storage.example/blob"},
            [(BLOB_URL.replace("https", "http"), True), ("http://storage.example/blob", False)],
            BLOB,
        ),
        (
            "to something that is not http",
            "https://reg.example",
            {BLOB_URL: "file:///etc/passwd"},
            [(BLOB_URL, True)],
            "redirect to file:// refused",
        ),
        (
            "more than five hops",
            "https://reg.example",
            {BLOB_URL: "/r1", **{f"https://reg.example/r{i}": f"/r{i + 1}" for i in range(1, 6)}},
            [(BLOB_URL, True), *[(f"https://reg.example/r{i}", True) for i in range(1, 6)]],
            "more than 5 redirects",
        ),
    ],
)
def test_redirects_carry_credentials_only_to_their_origin(
    label: str,
    base: str,
    hops: dict[str, str],
    expected_seen: list[tuple[str, bool]],
    expected: bytes | str,
) -> None:
    seen, outcome = follow(base, hops)
    assert seen == expected_seen, label
    if isinstance(expected, bytes):
        assert outcome == expected, label
    else:
        assert isinstance(outcome, str) and expected in outcome, (label, outcome)


def test_a_head_answer_declaring_a_large_body_is_not_read_against_a_limit() -> None:
    # HEAD of a 100 MiB layer (push checks whether it exists) declares the GET's length.
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "HEAD"
        return httpx.Response(200, headers={"Content-Length": str(100 * 1024 * 1024)})

    with OciRegistryClient("r.example", transport=httpx.MockTransport(handler)) as client:
        response = client.request("HEAD", f"/v2/app/blobs/{DIGEST}", repository="app")
    assert response.status_code == 200


# -- referrers: the API's absence is told by status, a limit is never mistaken for it --------


def referrers_client(referrers: httpx.Response, seen: list[str]) -> OciRegistryClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if "/referrers/" in request.url.path:
            return referrers
        return httpx.Response(404)  # no referrers tag, no .sig tag

    # A port with "405" in it: the error message of any request to it says "405".
    return OciRegistryClient("r.example:4051", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status", [400, 404, 405])
def test_a_registry_without_the_referrers_api_falls_back_to_the_tag_schema(status: int) -> None:
    seen: list[str] = []
    with referrers_client(httpx.Response(status), seen) as client:
        assert list_referrers(client, ImageRef("r.example:4051", "app", digest=DIGEST)) == []
    assert seen == [
        f"/v2/app/referrers/{DIGEST}",
        f"/v2/app/manifests/{DIGEST.replace(':', '-')}",
        f"/v2/app/manifests/{DIGEST.replace(':', '-')}.sig",
    ]


def test_an_oversized_referrers_list_fails_even_when_its_message_says_405() -> None:
    oversized = httpx.Response(200, headers={"Content-Length": str(64 * 1024 * 1024)})
    seen: list[str] = []
    with (
        referrers_client(oversized, seen) as client,
        pytest.raises(RegistryError, match=r"r\.example:4051: GET .*: body is more than"),
    ):
        list_referrers(client, ImageRef("r.example:4051", "app", digest=DIGEST))
    assert seen == [f"/v2/app/referrers/{DIGEST}"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nests too deeply to read"),  # 400 KB, under any cap
        (b"not json", "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
    ],
)
def test_documents_that_cannot_be_read_name_why(data: bytes, message: str) -> None:
    from imagedrift.registry.manifests import parse_json

    with pytest.raises(RegistryError, match=message):
        parse_json(data, "manifest", "r.example")

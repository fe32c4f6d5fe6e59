"""Image building (push.py) and the pure helpers of the OCI backend, without a registry.

Client behaviour that needs HTTP is exercised here through ``httpx.MockTransport`` only
where a real server cannot produce the case (tampered content, a clock moving past token
expiry); everything else is in tests/integration/test_oci_registry.py.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile

import httpx
import pytest

from imagedrift.core.images import Platform
from imagedrift.core.refs import ImageRef
from imagedrift.errors import InvalidSpec, RegistryError
from imagedrift.registry.base import Credentials
from imagedrift.registry.oci import (
    Challenge,
    OciRegistryClient,
    credentials_from_docker_config,
    parse_challenge,
    parse_retry_after,
)
from imagedrift.registry.push import (
    BASE_DIGEST,
    BASE_NAME,
    LINUX_AMD64,
    LINUX_ARM64,
    Image,
    Index,
    Layer,
    base_marks,
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- building images ------------------------------------------------------------------


def test_layers_are_deterministic_tar_gz_with_diff_ids() -> None:
    files: dict[str, bytes | str] = {
        "etc/b.conf": "b",
        "etc/a.conf": b"a",
        "usr/bin/tool": "#!/bin/sh\n",
    }
    layer = Layer.from_files(files)
    assert layer == Layer.from_files(dict(reversed(list(files.items()))))
    assert layer.digest == sha256(layer.blob)
    tar_bytes = gzip.decompress(layer.blob)
    assert layer.diff_id == sha256(tar_bytes)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "etc",
            "etc/a.conf",
            "etc/b.conf",
            "usr",
            "usr/bin",
            "usr/bin/tool",
        ]
        assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
        member = tar.extractfile("usr/bin/tool")
        assert member is not None and member.read() == b"#!/bin/sh\n"
    assert Layer.from_files({"x": "1"}).digest != Layer.from_files({"x": "2"}).digest


def test_image_config_and_manifest_documents() -> None:
    layers = (Layer.from_files({"a": "1"}), Layer.from_files({"b": "2"}))
    image = Image(
        layers,
        platform=Platform("linux", "arm", "v7"),
        labels={"k": "v"},
        annotations={"a": "b"},
        created="2025-02-03T04:05:06Z",
    )
    config = json.loads(image.config_bytes())
    assert config == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
        "created": "2025-02-03T04:05:06Z",
        "config": {"Labels": {"k": "v"}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    manifest = json.loads(image.manifest_bytes())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": sha256(image.config_bytes()),
        "size": len(image.config_bytes()),
    }
    assert [entry["digest"] for entry in manifest["layers"]] == [layer.digest for layer in layers]
    assert manifest["annotations"] == {"a": "b"}
    assert image.digest == sha256(image.manifest_bytes())


def test_derived_images_start_with_the_base_layers() -> None:
    base = Image((Layer.from_files({"os": "1"}),), labels={"maintainer": "platform"})
    own = Layer.from_files({"app": "1"})
    app = base.derive(own, labels=base_marks(base.digest, "example.test/base:1"))
    assert app.layers == (*base.layers, own)
    assert app.labels == {
        "maintainer": "platform",
        BASE_DIGEST: base.digest,
        BASE_NAME: "example.test/base:1",
    }
    assert app.annotations == {}

    patched = base.with_layer(0, Layer.from_files({"os": "1 patched"}))
    assert patched.digest != base.digest and patched.labels == base.labels


def test_index_per_platform_derivation_and_attestations() -> None:
    base = Index.of(
        Image((Layer.from_files({"os": "amd64"}),), platform=LINUX_AMD64),
        Image((Layer.from_files({"os": "arm64"}),), platform=LINUX_ARM64),
    ).with_attestations()
    document = json.loads(base.manifest_bytes())
    platforms = [
        (e["platform"]["os"], e["platform"]["architecture"]) for e in document["manifests"]
    ]
    assert platforms == [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("unknown", "unknown"),
        ("unknown", "unknown"),
    ]
    attestation = document["manifests"][2]
    assert attestation["annotations"] == {
        "vnd.docker.reference.digest": base.for_platform(LINUX_AMD64).digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }

    own = Layer.from_files({"app": "1"})
    arm_only = Layer.from_files({"arm-quirk": "1"})
    app = base.derive(
        own, annotations=base_marks(base.digest), per_platform={LINUX_ARM64: [arm_only]}
    )
    assert len(app.images) == 2  # attestations describe the base build, not the app
    assert app.for_platform(LINUX_AMD64).layers == (*base.for_platform(LINUX_AMD64).layers, own)
    assert app.for_platform(LINUX_ARM64).layers == (
        *base.for_platform(LINUX_ARM64).layers,
        own,
        arm_only,
    )
    assert json.loads(app.manifest_bytes())["annotations"] == {BASE_DIGEST: base.digest}
    with pytest.raises(KeyError):
        app.for_platform(Platform("windows", "amd64"))


# -- pure helpers of the OCI backend -------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.example.test/token",service="registry.example.test",'
            'scope="repository:library/python:pull"',
            Challenge(
                "bearer",
                "https://auth.example.test/token",
                "registry.example.test",
                "repository:library/python:pull",
            ),
        ),
        (
            'bearer realm="https://a/t", scope="repository:x:pull,push"',
            Challenge("bearer", "https://a/t", "", "repository:x:pull,push"),
        ),
        ('Basic realm="Registry Realm"', Challenge("basic", "Registry Realm")),
        ("Basic", Challenge("basic")),
        ("Negotiate abc", None),
        ("", None),
    ],
)
def test_parse_challenge(header: str, expected: Challenge | None) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 120.0),  # two minutes after "now" below
        ("Wed, 21 Oct 2015 07:20:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412360.0  # Wed, 21 Oct 2015 07:26:00 GMT
    assert parse_retry_after(value, now=now) == expected


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("auths", "host", "expected"),
    [
        ({"myreg.example.test": {"auth": _auth("u", "p:w")}}, "myreg.example.test", ("u", "p:w")),
        (
            {"https://myreg.example.test/v1/": {"username": "u", "password": "p"}},
            "myreg.example.test",
            ("u", "p"),
        ),
        (
            {"https://index.docker.io/v1/": {"auth": _auth("hub", "tok")}},
            "docker.io",
            ("hub", "tok"),
        ),
        ({"127.0.0.1:5000": {"auth": _auth("a", "b")}}, "127.0.0.1:5000", ("a", "b")),
        ({"other.example.test": {"auth": _auth("a", "b")}}, "myreg.example.test", None),
    ],
)
def test_credentials_from_docker_config(
    auths: dict[str, dict[str, str]], host: str, expected: tuple[str, str] | None
) -> None:
    document = json.dumps({"auths": auths})
    found = credentials_from_docker_config(document, host, identity="secret ns/pull")
    if expected is None:
        assert found is None
    else:
        assert found == Credentials(*expected, identity="secret ns/pull")


def test_legacy_dockercfg_has_no_auths_level() -> None:
    document = {"https://myreg.example.test": {"auth": _auth("old", "cfg")}, "credsStore": "x"}
    found = credentials_from_docker_config(document, "myreg.example.test", identity="secret ns/old")
    assert found == Credentials("old", "cfg", identity="secret ns/old")


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        '{"auths": []}',
        '{"auths": {"h": {"auth": "%%%"}}}',
        '{"auths": {"h": {"auth": "dXNlcg=="}}}',
    ],
)
def test_broken_docker_config_is_an_invalid_spec(document: str) -> None:
    with pytest.raises(InvalidSpec, match="secret ns/pull"):
        credentials_from_docker_config(document, "h", identity="secret ns/pull")


# -- client cases a real registry cannot produce -----------------------------------------


def test_content_that_does_not_match_its_digest_is_rejected() -> None:
    manifest = Image((Layer.from_files({"a": "1"}),)).manifest_bytes()
    claimed = sha256(manifest + b" ")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=manifest,
            headers={
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": claimed,
            },
        )

    client = OciRegistryClient("reg.example.test", transport=httpx.MockTransport(handler))
    with client, pytest.raises(RegistryError, match="does not match its digest"):
        client.get_manifest(ImageRef.parse("reg.example.test/app:1"))


def test_tokens_are_refreshed_shortly_before_they_expire() -> None:
    now = [1000.0]
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            tokens.append(f"t{len(tokens)}")
            return httpx.Response(200, json={"access_token": tokens[-1], "expires_in": 100})
        if request.headers.get("Authorization") != f"Bearer {tokens[-1] if tokens else ''}":
            challenge = 'Bearer realm="https://reg.example.test/token",service="reg"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})

    client = OciRegistryClient(
        "reg.example.test", transport=httpx.MockTransport(handler), clock=lambda: now[0]
    )
    ref = ImageRef.parse("reg.example.test/app:1")
    with client:
        client.resolve_digest(ref)
        now[0] += 85  # inside the token's life, before the refresh margin
        client.resolve_digest(ref)
        assert tokens == ["t0"]
        now[0] += 10  # within 10% of expiry: refresh proactively, no 401 round trip
        client.resolve_digest(ref)
        assert tokens == ["t0", "t1"]

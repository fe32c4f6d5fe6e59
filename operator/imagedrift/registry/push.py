"""Build real OCI images in memory and push them through the distribution API.

Used by the demo and the tests to publish base images, application images built on them,
and patched bases. Everything is deterministic (fixed mtimes, owners and gzip headers), so
the same inputs always give the same digests::

    base = Image(layers=(Layer.from_files({"etc/os-release": "ID=demo\\n"}),))
    app = base.derive(Layer.from_files({"app/main.py": "print('hi')\\n"}),
                      annotations=base_marks(base.digest, "127.0.0.1:5000/base:1"))
    push_image(client, "base", base, tag="1")
    push_image(client, "app", app, tag="1.0.0")

Multi-arch: ``Index.of(base_amd64, base_arm64)`` and ``index.derive(layer, ...)`` build the
app index whose per-platform manifests start with the base's layers for that platform.
Pushing reuses ``OciRegistryClient.request`` so auth, retries and errors are the client's.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from imagedrift.core.images import Platform
from imagedrift.core.lineage import BASE_DIGEST_KEY, BASE_NAME_KEY
from imagedrift.core.refs import ImageRef
from imagedrift.errors import NotFound, RegistryError
from imagedrift.registry.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    OciRegistryClient,
    sha256_digest,
)

OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_TOTO: Final = "application/vnd.in-toto+json"
# The keys lineage reads; one definition, in the core.
BASE_DIGEST: Final = BASE_DIGEST_KEY
BASE_NAME: Final = BASE_NAME_KEY
DEFAULT_CREATED: Final = "2024-01-01T00:00:00Z"
LINUX_AMD64: Final = Platform("linux", "amd64")
LINUX_ARM64: Final = Platform("linux", "arm64")
ATTESTATION_PLATFORM: Final = Platform("unknown", "unknown")


def _canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def base_marks(base_digest: str, base_name: str = "") -> dict[str, str]:
    """The OCI base-image keys, to pass as ``annotations=`` or ``labels=``."""
    marks = {BASE_DIGEST: base_digest}
    if base_name:
        marks[BASE_NAME] = base_name
    return marks


@dataclass(frozen=True)
class Layer:
    """One layer blob: bytes as stored in the registry, their media type and ``diff_id``
    (the digest of the uncompressed tar, which the image config lists)."""

    blob: bytes = field(repr=False)
    media_type: str
    diff_id: str

    @classmethod
    def from_files(cls, files: Mapping[str, bytes | str], *, mtime: int = 0) -> Layer:
        """A gzip'd tar of ``files`` (path -> content) with parent directories, sorted,
        owned by root, with fixed mtimes: equal inputs give equal digests."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            directories: set[str] = set()
            for name in sorted(files):
                parts = name.strip("/").split("/")
                for depth in range(1, len(parts)):
                    directory = "/".join(parts[:depth])
                    if directory not in directories:
                        directories.add(directory)
                        tar.addfile(_tarinfo(directory + "/", tarfile.DIRTYPE, 0o755, 0, mtime))
                value = files[name]
                data = value.encode() if isinstance(value, str) else value
                info = _tarinfo("/".join(parts), tarfile.REGTYPE, 0o644, len(data), mtime)
                tar.addfile(info, io.BytesIO(data))
        tar_bytes = raw.getvalue()
        # mtime=0 and no file name keep the gzip header, and so the digest, stable.
        compressed = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
        return cls(compressed, OCI_LAYER_GZIP, sha256_digest(tar_bytes))

    @classmethod
    def raw(cls, data: bytes, media_type: str) -> Layer:
        """A non-tar blob (an attestation statement, an SBOM); its diff_id is its digest."""
        return cls(data, media_type, sha256_digest(data))

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _tarinfo(name: str, kind: bytes, mode: int, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


@dataclass(frozen=True)
class Image:
    """One platform's image: layers, config (platform, labels, created) and manifest
    annotations. ``digest`` is computed locally and equals what the registry will report.

    ``descriptor_annotations`` go on this image's entry when it is part of an index.
    """

    layers: tuple[Layer, ...]
    platform: Platform = LINUX_AMD64
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: str = DEFAULT_CREATED
    descriptor_annotations: Mapping[str, str] = field(default_factory=dict)

    def derive(
        self,
        *layers: Layer,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        created: str | None = None,
    ) -> Image:
        """An image built ``FROM`` this one: this image's layers first, then ``layers``.

        Base labels are inherited (as Docker does) and ``labels`` added on top; manifest
        annotations are not inherited.
        """
        return Image(
            layers=self.layers + layers,
            platform=self.platform,
            labels={**self.labels, **(labels or {})},
            annotations=dict(annotations or {}),
            created=created or self.created,
        )

    def with_layer(self, position: int, layer: Layer) -> Image:
        """The same image with the layer at ``position`` replaced (a patched base)."""
        layers = list(self.layers)
        layers[position] = layer
        return replace(self, layers=tuple(layers))

    def config_bytes(self) -> bytes:
        config: dict[str, Any] = {
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "created": self.created,
            "config": {"Labels": dict(self.labels)} if self.labels else {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
        }
        if self.platform.variant:
            config["variant"] = self.platform.variant
        return _canonical(config)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes())

    def manifest_bytes(self) -> bytes:
        config = self.config_bytes()
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [layer.descriptor() for layer in self.layers],
        }
        if self.annotations:
            manifest["annotations"] = dict(self.annotations)
        return _canonical(manifest)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes())

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(layer.digest for layer in self.layers)

    def index_entry(self) -> dict[str, Any]:
        data = self.manifest_bytes()
        platform: dict[str, str] = {
            "architecture": self.platform.architecture,
            "os": self.platform.os,
        }
        if self.platform.variant:
            platform["variant"] = self.platform.variant
        entry: dict[str, Any] = {
            "mediaType": OCI_MANIFEST,
            "digest": sha256_digest(data),
            "size": len(data),
            "platform": platform,
        }
        if self.descriptor_annotations:
            entry["annotations"] = dict(self.descriptor_annotations)
        return entry

    def attestation(self) -> Image:
        """An in-toto attestation manifest for this image, as BuildKit attaches them to an
        index (platform ``unknown/unknown``); readers must skip it."""
        statement = _canonical(
            {
                "_type": "https://in-toto.io/Statement/v0.1",
                "predicateType": "https://spdx.dev/Document",
                "subject": [{"digest": {"sha256": self.digest.split(":", 1)[1]}}],
                "predicate": {},
            }
        )
        marks = {
            "vnd.docker.reference.digest": self.digest,
            "vnd.docker.reference.type": "attestation-manifest",
        }
        return Image(
            layers=(Layer.raw(statement, IN_TOTO),),
            platform=ATTESTATION_PLATFORM,
            created=self.created,
            descriptor_annotations=marks,
        )


@dataclass(frozen=True)
class Index:
    """A multi-platform image: one ``Image`` per platform (plus any attestations) and the
    index's own annotations."""

    images: tuple[Image, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, *images: Image, annotations: Mapping[str, str] | None = None) -> Index:
        return cls(images=images, annotations=dict(annotations or {}))

    def with_attestations(self) -> Index:
        """This index plus an attestation manifest per platform image."""
        extra = tuple(image.attestation() for image in self.platform_images)
        return replace(self, images=self.images + extra)

    @property
    def platform_images(self) -> tuple[Image, ...]:
        return tuple(image for image in self.images if image.platform != ATTESTATION_PLATFORM)

    def for_platform(self, platform: Platform) -> Image:
        for image in self.platform_images:
            if image.platform == platform:
                return image
        raise KeyError(str(platform))

    def derive(
        self,
        *layers: Layer,
        annotations: Mapping[str, str] | None = None,
        manifest_annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        per_platform: Mapping[Platform, Sequence[Layer]] | None = None,
    ) -> Index:
        """An app index built on this one: per platform, the base's layers then ``layers``
        (and ``per_platform[platform]`` when given). ``annotations`` go on the index,
        ``manifest_annotations`` and ``labels`` on every platform image."""
        images = tuple(
            image.derive(
                *layers,
                *((per_platform or {}).get(image.platform, ())),
                labels=labels,
                annotations=manifest_annotations,
            )
            for image in self.platform_images
        )
        return Index(images=images, annotations=dict(annotations or {}))

    def manifest_bytes(self) -> bytes:
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [image.index_entry() for image in self.images],
        }
        if self.annotations:
            index["annotations"] = dict(self.annotations)
        return _canonical(index)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes())


def push_blob(client: OciRegistryClient, repository: str, data: bytes) -> str:
    """Upload ``data`` unless the repository has it already; return its digest.

    Monolithic upload: POST opens a session, PUT with ``?digest=`` sends the bytes.
    """
    digest = sha256_digest(data)
    head = client.request(
        "HEAD", f"/v2/{repository}/blobs/{digest}", repository=repository, push=True, ok=(200, 404)
    )
    if head.status_code == 200:
        return digest
    started = client.request(
        "POST", f"/v2/{repository}/blobs/uploads/", repository=repository, push=True, ok=(202,)
    )
    location = started.headers.get("Location")
    if not location:
        raise RegistryError(
            f"{client.host}: upload started without a Location", registry=client.host
        )
    try:
        client.request(
            "PUT",
            location,
            repository=repository,
            push=True,
            params={"digest": digest},
            headers={"Content-Type": "application/octet-stream"},
            content=data,
            ok=(201, 204),
        )
    except NotFound:
        # A retried PUT finds its upload session consumed when the first one landed.
        client.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository=repository, push=True)
    return digest


def _put_manifest(
    client: OciRegistryClient, repository: str, reference: str, data: bytes, media_type: str
) -> str:
    digest = sha256_digest(data)
    response = client.request(
        "PUT",
        f"/v2/{repository}/manifests/{reference}",
        repository=repository,
        push=True,
        headers={"Content-Type": media_type},
        content=data,
        ok=(201, 200),
    )
    reported = response.headers.get("Docker-Content-Digest", digest)
    if reported != digest:
        raise RegistryError(
            f"{client.host}: pushed {digest} but the registry stored {reported}",
            registry=client.host,
        )
    return digest


def push_image(
    client: OciRegistryClient, repository: str, image: Image, tag: str | None = None
) -> str:
    """Push ``image`` (layers, config, manifest) and point ``tag`` at it; return the
    manifest digest. Without a tag the manifest is stored by digest only."""
    for layer in image.layers:
        push_blob(client, repository, layer.blob)
    push_blob(client, repository, image.config_bytes())
    return _put_manifest(
        client, repository, tag or image.digest, image.manifest_bytes(), OCI_MANIFEST
    )


def push_index(
    client: OciRegistryClient, repository: str, index: Index, tag: str | None = None
) -> str:
    """Push every image of ``index`` by digest, then the index under ``tag``; return the
    index digest (per-platform digests are ``image.digest`` of ``index.images``)."""
    for image in index.images:
        push_image(client, repository, image)
    return _put_manifest(client, repository, tag or index.digest, index.manifest_bytes(), OCI_INDEX)


def push(
    client: OciRegistryClient, repository: str, artifact: Image | Index, tag: str | None = None
) -> str:
    """``push_image`` or ``push_index``, whichever ``artifact`` needs."""
    if isinstance(artifact, Index):
        return push_index(client, repository, artifact, tag)
    return push_image(client, repository, artifact, tag)


# -- artifacts attached to an image: signatures and scan reports ------------------------------

OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
COSIGN_PAYLOAD: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE: Final = "dev.cosignproject.cosign/signature"
COSIGN_ARTIFACT: Final = "application/vnd.dev.cosign.artifact.sig.v1+json"
NOTATION_ARTIFACT: Final = "application/vnd.cncf.notary.signature"
NOTATION_JWS: Final = "application/jose+json"
TRIVY_JSON: Final = "application/vnd.aquasecurity.trivy.report.json.v1+json"
SARIF: Final = "application/sarif+json"


def attach(
    client: OciRegistryClient,
    repository: str,
    subject: str,
    artifact_type: str,
    blobs: Sequence[tuple[bytes, str, Mapping[str, str]]],
    *,
    annotations: Mapping[str, str] | None = None,
    tag_schema: bool = True,
) -> str:
    """Push an OCI 1.1 artifact whose ``subject`` is the manifest ``subject`` (a digest).

    ``blobs`` are (bytes, media type, annotations) layers. With ``tag_schema`` the
    referrers tag schema index (tag ``sha256-<hex>``) is updated too, as clients do for
    registries without the referrers API. Returns the artifact manifest's digest.
    """
    data, media_type, _ = client.get_manifest(_ref(client, repository).with_digest(subject))
    config = push_blob(client, repository, b"{}")
    layers = []
    for blob, blob_type, blob_annotations in blobs:
        push_blob(client, repository, blob)
        descriptor: dict[str, Any] = {
            "mediaType": blob_type,
            "digest": sha256_digest(blob),
            "size": len(blob),
        }
        if blob_annotations:
            descriptor["annotations"] = dict(blob_annotations)
        layers.append(descriptor)
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": config, "size": 2},
        "layers": layers,
        "subject": {"mediaType": media_type, "digest": subject, "size": len(data)},
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    body = _canonical(manifest)
    digest = _put_manifest(client, repository, sha256_digest(body), body, OCI_MANIFEST)
    if tag_schema:
        tag = subject.replace(":", "-", 1)
        try:
            existing, _, _ = client.get_manifest(_ref(client, repository).with_tag(tag))
            index = json.loads(existing)
        except NotFound:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        entry: dict[str, Any] = {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(body),
            "artifactType": artifact_type,
        }
        if annotations:
            entry["annotations"] = dict(annotations)
        index["manifests"] = [
            m for m in index.get("manifests") or [] if m.get("digest") != digest
        ] + [entry]
        _put_manifest(client, repository, tag, _canonical(index), OCI_INDEX)
    return digest


def _ref(client: OciRegistryClient, repository: str) -> ImageRef:
    return ImageRef(client.host, repository, "", "")


def cosign_payload(reference: str, digest: str) -> bytes:
    """The simple-signing JSON cosign signs for ``digest``."""
    return _canonical(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    )


def _sign(private_key: Any, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    raise TypeError(f"unsupported key {type(private_key).__name__}")


def cosign_sign(
    client: OciRegistryClient,
    repository: str,
    digest: str,
    private_key: Any,
    *,
    as_referrer: bool = False,
    signed_digest: str | None = None,
) -> str:
    """Sign ``digest`` as cosign does: by default a ``sha256-<hex>.sig`` tag; with
    ``as_referrer`` an OCI 1.1 referrer (cosign's ``--registry-referrers-mode=oci-1-1``).
    ``signed_digest`` puts another digest in the payload (a signature for something else)."""
    import base64

    payload = cosign_payload(f"{client.host}/{repository}", signed_digest or digest)
    signature = base64.b64encode(_sign(private_key, payload)).decode()
    layer = (payload, COSIGN_PAYLOAD, {COSIGN_SIGNATURE: signature})
    if as_referrer:
        return attach(client, repository, digest, COSIGN_ARTIFACT, [layer])
    push_blob(client, repository, payload)
    config = _canonical({"architecture": "", "os": "", "rootfs": {"type": "layers"}})
    push_blob(client, repository, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {
                "mediaType": COSIGN_PAYLOAD,
                "digest": sha256_digest(payload),
                "size": len(payload),
                "annotations": {COSIGN_SIGNATURE: signature},
            }
        ],
    }
    tag = digest.replace(":", "-", 1) + ".sig"
    return _put_manifest(client, repository, tag, _canonical(manifest), OCI_MANIFEST)


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def notation_sign(client: OciRegistryClient, repository: str, digest: str, private_key: Any) -> str:
    """Attach a Notation JWS signature (ES256 over ``targetArtifact``) to ``digest``.

    The envelope carries no certificate chain: enough for key-based verification and for
    presence checks, not for ``notation verify`` with a trust store.
    """
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    data, media_type, _ = client.get_manifest(_ref(client, repository).with_digest(digest))
    payload = _canonical(
        {"targetArtifact": {"mediaType": media_type, "digest": digest, "size": len(data)}}
    )
    header = _canonical(
        {
            "alg": "ES256",
            "crit": ["io.cncf.notary.signingScheme"],
            "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": DEFAULT_CREATED,
        }
    )
    protected, body = _b64url(header), _b64url(payload)
    r, s = decode_dss_signature(_sign(private_key, f"{protected}.{body}".encode()))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    envelope = _canonical(
        {"payload": body, "protected": protected, "header": {}, "signature": _b64url(signature)}
    )
    return attach(client, repository, digest, NOTATION_ARTIFACT, [(envelope, NOTATION_JWS, {})])


def attach_report(
    client: OciRegistryClient,
    repository: str,
    digest: str,
    report: Mapping[str, Any],
    *,
    sarif: bool = False,
    created: str = "",
) -> str:
    """Attach a Trivy JSON (or SARIF) report to ``digest`` as a referrer."""
    kind = SARIF if sarif else TRIVY_JSON
    annotations = {"org.opencontainers.image.created": created} if created else None
    return attach(
        client, repository, digest, kind, [(_canonical(report), kind, {})], annotations=annotations
    )


def trivy_report(digest: str, findings: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A minimal ``trivy image -f json`` document with (id, severity) findings."""
    return {
        "SchemaVersion": 2,
        "ArtifactType": "container_image",
        "Metadata": {"RepoDigests": [f"app@{digest}"]},
        "Results": [
            {
                "Target": "app",
                "Vulnerabilities": [
                    {"VulnerabilityID": i, "Severity": s, "PkgName": "pkg"} for i, s in findings
                ],
            }
        ],
    }

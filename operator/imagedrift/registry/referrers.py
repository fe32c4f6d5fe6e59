"""What is attached to an image: OCI 1.1 referrers, with the fallbacks registries need.

In order: the referrers API (``GET /v2/<repo>/referrers/<digest>``, where the client can
make raw requests), then the referrers tag schema (tag ``sha256-<hex>`` holding an index
of referrers, what clients push to registries without the API), then cosign's own
``sha256-<hex>.sig`` tag. Each found artifact's manifest is read so callers see its
layers. Errors are the client's ``imagedrift.errors``; a missing tag is simply nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from imagedrift.core.refs import ImageRef
from imagedrift.errors import NotFound, RegistryError
from imagedrift.registry.base import RegistryClient
from imagedrift.registry.limits import (
    DEFAULT_LIMITS,
    SETTINGS,
    ReadLimits,
    ReadRefused,
    check_count,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
COSIGN_SIG_TAG = "cosign .sig tag"


@runtime_checkable
class RawRequests(Protocol):
    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...


@runtime_checkable
class Limited(Protocol):
    """A client that carries its own read limits (both backends do)."""

    limits: ReadLimits


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Referrer:
    digest: str  # the referrer manifest's digest
    artifact_type: str
    annotations: Mapping[str, str]
    layers: tuple[Layer, ...]
    found_by: str  # "referrers API" | "referrers tag schema" | COSIGN_SIG_TAG


def schema_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest`` (``sha256:ab..`` -> ``sha256-ab..``)."""
    return digest.replace(":", "-", 1)


def _descriptors_from_api(client: RegistryClient, ref: ImageRef) -> list[dict[str, Any]] | None:
    if not isinstance(client, RawRequests):
        return None
    response = client.request(
        "GET",
        f"/v2/{ref.repository}/referrers/{ref.digest}",
        repository=ref.repository,
        headers={"Accept": OCI_INDEX},
        ok=(200, 400, 404, 405),
    )
    if response.status_code != 200:
        # No referrers API here: distribution 2.x answers 404, others 400 or 405. Told by
        # the status itself: a message can hold "405" in a port or a digest.
        return None
    if "application/json" not in response.headers.get(
        "Content-Type", ""
    ) and OCI_INDEX not in response.headers.get("Content-Type", ""):
        return None
    try:
        return list(json.loads(response.content).get("manifests") or [])
    except (ValueError, AttributeError):
        return None


def _descriptors_from_tag(client: RegistryClient, ref: ImageRef) -> list[dict[str, Any]]:
    try:
        data, _, _ = client.get_manifest(ref.with_tag(schema_tag(ref.digest)))
    except NotFound:
        return []
    try:
        return list(json.loads(data).get("manifests") or [])
    except (ValueError, AttributeError):
        return []


def _read(client: RegistryClient, ref: ImageRef, digest: str, found_by: str) -> Referrer | None:
    try:
        data, _, _ = client.get_manifest(ref.with_digest(digest))
        manifest = json.loads(data)
    except NotFound:
        return None
    except ValueError:
        return None
    layers = tuple(
        Layer(
            str(d.get("mediaType", "")), str(d.get("digest", "")), dict(d.get("annotations") or {})
        )
        for d in manifest.get("layers") or manifest.get("blobs") or ()
    )
    artifact_type = str(
        manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType", "")
    )
    return Referrer(
        digest, artifact_type, dict(manifest.get("annotations") or {}), layers, found_by
    )


def list_referrers(client: RegistryClient, ref: ImageRef) -> list[Referrer]:
    """Everything attached to ``ref`` (pinned by digest), deduplicated by digest.

    More referrers listed than the client's ``referrers`` limit raises RegistryError
    before any is read: a truncated list could leave out the one signature that counts.
    """
    if not ref.digest:
        raise ValueError(f"{ref} is not pinned by digest")
    descriptors = _descriptors_from_api(client, ref)
    found_by = "referrers API"
    if descriptors is None:
        descriptors, found_by = _descriptors_from_tag(client, ref), "referrers tag schema"
    limit = (client.limits if isinstance(client, Limited) else DEFAULT_LIMITS).referrers
    try:
        check_count(len(descriptors), limit, f"{found_by} of {ref}", SETTINGS["referrers"])
    except ReadRefused as exc:
        raise RegistryError(f"{client.host}: {exc}", registry=client.host) from None
    found: dict[str, Referrer] = {}
    for descriptor in descriptors:
        digest = str(descriptor.get("digest", ""))
        if digest and digest not in found:
            referrer = _read(client, ref, digest, found_by)
            if referrer:
                found[digest] = referrer
    try:
        _, _, digest = client.get_manifest(ref.with_tag(schema_tag(ref.digest) + ".sig"))
    except NotFound:
        return list(found.values())
    if digest not in found:
        referrer = _read(client, ref, digest, COSIGN_SIG_TAG)
        if referrer:
            found[digest] = referrer
    return list(found.values())

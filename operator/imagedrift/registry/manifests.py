"""Reading an image (manifest or index, platform manifests, configs) from any backend.

Both registry backends fetch bytes their own way; what the bytes mean is decided once here.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from imagedrift.core.images import ImageManifest, Platform, ResolvedImage
from imagedrift.core.refs import ImageRef
from imagedrift.errors import RegistryError
from imagedrift.registry.limits import DEFAULT_LIMITS, SETTINGS, ReadRefused, check_count

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
IMAGE_CONFIG_TYPES: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})
MANIFEST_ACCEPT: Final = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))


GetManifest = Callable[[ImageRef], tuple[bytes, str, str]]  # -> (bytes, media type, digest)
GetConfig = Callable[[ImageRef, str], bytes]  # (ref, config digest) -> verified config bytes


def parse_json(data: bytes, what: str, host: str) -> dict[str, Any]:
    """``data`` as a JSON object, or RegistryError saying which document was not."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{host}: {what} is not JSON", registry=host) from None
    except RecursionError:  # a few MiB of "[[[[" fit in any byte cap
        raise RegistryError(f"{host}: {what} nests too deeply to read", registry=host) from None
    if not isinstance(document, dict):
        raise RegistryError(f"{host}: {what} is not a JSON object", registry=host)
    return document


def platform_of(value: Any) -> Platform | None:
    """The platform of an index entry's ``platform`` or of an image config, if it names one."""
    if not isinstance(value, dict) or not value.get("os") or not value.get("architecture"):
        return None
    return Platform(str(value["os"]), str(value["architecture"]), str(value.get("variant") or ""))


def _is_image_entry(entry: dict[str, Any]) -> bool:
    """Image manifests of an index, without attestations (``unknown/unknown``, Docker's
    ``attestation-manifest`` reference type) and other artifacts."""
    platform = platform_of(entry.get("platform"))
    if platform is not None and "unknown" in (platform.os, platform.architecture):
        return False
    if entry.get("mediaType") not in IMAGE_MANIFEST_TYPES:
        return False
    annotations = entry.get("annotations") or {}
    return bool(annotations.get("vnd.docker.reference.type") != "attestation-manifest")


def image_manifest(
    ref: ImageRef,
    data: bytes,
    media_type: str,
    platform: Platform | None,
    *,
    get_config: GetConfig,
    host: str,
) -> ImageManifest:
    """One platform's manifest at ``ref`` (pinned), with its config's labels and created time."""
    document = parse_json(data, f"manifest {ref}", host)
    if media_type not in IMAGE_MANIFEST_TYPES and "layers" not in document:
        raise RegistryError(
            f"{host}: {ref} is a {media_type or 'manifest of unknown type'}, not an image",
            registry=host,
        )
    config = document.get("config") or {}
    config_digest = str(config.get("digest") or "")
    labels: dict[str, str] = {}
    created = ""
    # Artifacts (signatures, SBOMs) carry configs that are not image configs.
    if config_digest and config.get("mediaType") in IMAGE_CONFIG_TYPES:
        image_config = parse_json(
            get_config(ref, config_digest), f"config {config_digest} of {ref}", host
        )
        labels = dict((image_config.get("config") or {}).get("Labels") or {})
        created = str(image_config.get("created") or "")
        if platform is None:
            platform = platform_of(image_config)
    return ImageManifest(
        digest=ref.digest,
        media_type=media_type,
        config_digest=config_digest,
        layers=tuple(str(layer["digest"]) for layer in document.get("layers") or []),
        annotations=dict(document.get("annotations") or {}),
        labels=labels,
        platform=platform,
        created=created,
    )


class Documents:
    """Documents read by digest (manifests, configs), kept briefly across attempts.

    They are content-addressed, so any copy is as good as a fresh read. It matters when a
    registry (or our own request budget) refuses the second request of an image: the retry
    then asks only for what is missing instead of reading the manifest again, and a
    throttled fleet makes progress instead of spending its budget on the same manifests.
    """

    def __init__(self, max_entries: int = 2048, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._items: OrderedDict[tuple[str, str, str], tuple[bytes, str]] = OrderedDict()
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()

    def manifest(self, get: GetManifest, host: str) -> GetManifest:
        def read(ref: ImageRef) -> tuple[bytes, str, str]:
            if not ref.digest:
                return get(ref)
            key = (host, ref.repository, ref.digest)
            with self._lock:
                found = self._items.get(key)
            if found is not None:
                return found[0], found[1], ref.digest
            data, media_type, digest = get(ref)
            self._keep(key, data, media_type)
            return data, media_type, digest

        return read

    def config(self, get: GetConfig, host: str) -> GetConfig:
        def read(ref: ImageRef, digest: str) -> bytes:
            key = (host, ref.repository, digest)
            with self._lock:
                found = self._items.get(key)
            if found is not None:
                return found[0]
            data = get(ref, digest)
            self._keep(key, data, "")
            return data

        return read

    def keep_manifest(
        self, host: str, repository: str, digest: str, data: bytes, media_type: str
    ) -> None:
        """A manifest read some other way (by its tag), verified against ``digest``."""
        self._keep((host, repository, digest), data, media_type)

    def _keep(self, key: tuple[str, str, str], data: bytes, media_type: str) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (data, media_type)
            self._bytes += len(data)
            while len(self._items) > self._max or self._bytes > self._max_bytes:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= len(old)


DOCUMENTS = Documents()


def resolve_image(
    ref: ImageRef,
    *,
    get_manifest: GetManifest,
    get_config: GetConfig,
    host: str,
    max_children: int = DEFAULT_LIMITS.index_children,
) -> ResolvedImage:
    """The image at ``ref``: a single manifest, or an index with its platform manifests.

    An index listing more than ``max_children`` entries raises RegistryError before any
    child is read.
    """
    get_manifest = DOCUMENTS.manifest(get_manifest, host)
    get_config = DOCUMENTS.config(get_config, host)
    data, media_type, digest = get_manifest(ref)
    document = parse_json(data, f"manifest {ref}", host)
    pinned = ref.with_digest(digest)
    if media_type in INDEX_TYPES or "manifests" in document:
        entries = document.get("manifests") or []
        if not isinstance(entries, list):
            raise RegistryError(f"{host}: index {ref}: 'manifests' is not a list", registry=host)
        try:
            check_count(len(entries), max_children, f"index {ref}", SETTINGS["index_children"])
        except ReadRefused as exc:
            raise RegistryError(f"{host}: {exc}", registry=host) from None
        manifests: list[ImageManifest] = []
        for entry in entries:
            if not _is_image_entry(entry):
                continue
            child = ref.with_digest(str(entry["digest"]))
            child_data, child_type, _ = get_manifest(child)
            manifests.append(
                image_manifest(
                    child,
                    child_data,
                    child_type,
                    platform_of(entry.get("platform")),
                    get_config=get_config,
                    host=host,
                )
            )
        return ResolvedImage(
            ref=pinned,
            digest=digest,
            media_type=media_type,
            manifests=tuple(manifests),
            annotations=dict(document.get("annotations") or {}),
        )
    manifest = image_manifest(pinned, data, media_type, None, get_config=get_config, host=host)
    return ResolvedImage(
        ref=pinned,
        digest=digest,
        media_type=media_type,
        manifests=(manifest,),
        annotations=dict(manifest.annotations),
    )

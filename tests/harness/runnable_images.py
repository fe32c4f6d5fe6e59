"""Images a real node can run: a busybox base layer and an image config with an Entrypoint.

``push.py``'s ``Layer.from_files`` writes every file 0644 and ``Image`` writes no
Entrypoint, which is all a registry-only test needs. A container runtime needs an
executable and a command: ``busybox_layer()`` is Debian's static busybox as ``/bin/busybox``
(0755) with ``/bin/sh`` a symlink to it and a world-writable ``/tmp``, and ``RunnableImage``
adds ``Entrypoint`` and ``Env`` to the config. Both are deterministic like the rest of
``push.py``: equal inputs give equal digests::

    base = busybox_image()
    app = base.run(["/bin/sh", "-c", "echo hi; exec sleep 3600"],
                   Layer.from_files({"app/version": "1\\n"}))
    digest = push_image(registry.client(), "app", app, tag="1")
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from imagedrift.registry.oci import OciRegistryClient, sha256_digest
from imagedrift.registry.push import OCI_LAYER_GZIP, Image, Layer, push_image
from tests.harness.procs import HarnessError

BUSYBOX: Final = Path("/bin/busybox")  # Debian's busybox-static
DEFAULT_PATH: Final = "PATH=/bin"
PAUSE_REPOSITORY: Final = "imagedrift-test/pause"
PAUSE_TAG: Final = "1"


def _entry(name: str, kind: bytes, mode: int, *, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def busybox_layer(binary: Path = BUSYBOX) -> Layer:
    """``bin/busybox`` (0755), ``bin/sh`` -> busybox, ``tmp/`` (1777), as one gzip'd layer."""
    try:
        data = binary.read_bytes()
    except OSError as exc:
        raise HarnessError(
            f"{binary} is missing: runnable test images need the Debian package busybox-static "
            "(run `make test` or scripts/install-system-deps.sh)"
        ) from exc
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_entry("bin/", tarfile.DIRTYPE, 0o755))
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, 0o755, size=len(data)), io.BytesIO(data))
        tar.addfile(_entry("bin/sh", tarfile.SYMTYPE, 0o777, link="busybox"))
        tar.addfile(_entry("tmp/", tarfile.DIRTYPE, 0o1777))
    tar_bytes = raw.getvalue()
    return Layer(
        gzip.compress(tar_bytes, compresslevel=6, mtime=0), OCI_LAYER_GZIP, sha256_digest(tar_bytes)
    )


@dataclass(frozen=True)
class RunnableImage(Image):
    """An ``Image`` whose config has an ``Entrypoint`` (and ``Env``): a runtime can start it."""

    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH,)

    def config_bytes(self) -> bytes:
        config: dict[str, Any] = {"Env": list(self.env)}
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.labels:
            config["Labels"] = dict(self.labels)
        document: dict[str, Any] = {
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "created": self.created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
        }
        if self.platform.variant:
            document["variant"] = self.platform.variant
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def derive(
        self,
        *layers: Layer,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        created: str | None = None,
    ) -> RunnableImage:
        """``Image.derive`` that stays runnable: the entrypoint and Env are inherited, as a
        Dockerfile's ``FROM`` inherits them (so an ``Index`` of these derives runnable apps)."""
        return RunnableImage(
            layers=self.layers + layers,
            platform=self.platform,
            labels={**self.labels, **(labels or {})},
            annotations=dict(annotations or {}),
            created=created or self.created,
            entrypoint=self.entrypoint,
            env=self.env,
        )

    def run(
        self,
        entrypoint: Sequence[str],
        *layers: Layer,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> RunnableImage:
        """An image ``FROM`` this one with ``layers`` on top and ``entrypoint`` as its
        command (labels inherited, manifest annotations not)."""
        return RunnableImage(
            layers=self.layers + layers,
            platform=self.platform,
            labels={**self.labels, **(labels or {})},
            annotations=dict(annotations or {}),
            created=self.created,
            entrypoint=tuple(entrypoint),
            env=self.env,
        )


def busybox_image() -> RunnableImage:
    """The base: busybox alone, with ``/bin/sh`` as its entrypoint."""
    return RunnableImage(layers=(busybox_layer(),), entrypoint=("/bin/sh",))


def pause_image() -> RunnableImage:
    """A pod sandbox image: busybox sleeping for good (SIGKILLed when the pod goes)."""
    return busybox_image().run(["/bin/busybox", "sleep", "2147483647"])


def push_pause(client: OciRegistryClient) -> str:
    """Push the pause image as ``imagedrift-test/pause:1``; return its reference."""
    push_image(client, PAUSE_REPOSITORY, pause_image(), tag=PAUSE_TAG)
    return f"{client.host}/{PAUSE_REPOSITORY}:{PAUSE_TAG}"


__all__ = [
    "BUSYBOX",
    "PAUSE_REPOSITORY",
    "RunnableImage",
    "busybox_image",
    "busybox_layer",
    "pause_image",
    "push_pause",
]

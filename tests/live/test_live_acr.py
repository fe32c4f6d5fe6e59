"""The ACR backend against a real registry with DefaultAzureCredential (see conftest.py)."""

from __future__ import annotations

import os
import threading

import pytest

from imagedrift.core.refs import ImageRef
from imagedrift.registry.acr import AcrRegistryClient

pytestmark = pytest.mark.live_acr

HOST = os.environ.get("IMAGEDRIFT_LIVE_ACR", "")
IMAGE = os.environ.get("IMAGEDRIFT_LIVE_ACR_IMAGE", "hello-world:latest")


def test_live_registry_resolves_reads_and_caches_tokens() -> None:
    requests: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def record(host: str, method: str, path: str, status: int) -> None:
        with lock:
            requests.append((method, path, status))

    ref = ImageRef.parse(f"{HOST}/{IMAGE}")
    with AcrRegistryClient(HOST, {"identity": "default"}, on_request=record) as client:
        digest = client.resolve_digest(ref)
        assert digest.startswith("sha256:")
        image = client.get_image(ref)
        assert image.digest == digest and image.manifests
        info = client.tag_info(ref)
        assert info.digest == digest
        assert ref.tag in client.list_tags(ref.with_tag(""))
        with lock:
            requests.clear()
        assert client.resolve_digest(ref) == digest
        with lock:
            steady = list(requests)
    # With the ACR tokens cached, a steady-state lookup is one request.
    assert len(steady) == 1 and steady[0][2] == 200, steady
    assert not any("/oauth2/" in path for _, path, _ in steady)

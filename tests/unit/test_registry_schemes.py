"""Which scheme the registry pool's clients speak, per host a policy touches."""

from __future__ import annotations

from imagedrift.core.spec import parse_policy
from imagedrift.engine.registries import RegistryPool
from imagedrift.registry.oci import OciRegistryClient


class NoSecrets:
    def read_secret(self, name: str) -> dict[str, bytes] | None:
        raise AssertionError("no Secret is named")


def test_insecure_switches_only_the_named_hosts_to_plain_http() -> None:
    policy = parse_policy(
        "p",
        {
            "base": {"image": "127.0.0.1:5000/base", "tag": "1", "insecure": True},
            "app": {"insecureRegistries": ["127.0.0.1:5002"]},
        },
    )
    pool = RegistryPool(NoSecrets(), namespace="imagedrift-system")
    try:
        urls = {}
        for host in ("127.0.0.1:5000", "127.0.0.1:5002", "127.0.0.1:5001", "ghcr.io"):
            client = pool.client_for(host, policy.base)
            assert isinstance(client, OciRegistryClient)
            urls[host] = client.base_url
    finally:
        pool.close()
    assert urls == {
        "127.0.0.1:5000": "http://127.0.0.1:5000",  # the base's registry
        "127.0.0.1:5002": "http://127.0.0.1:5002",  # named in spec.app.insecureRegistries
        "127.0.0.1:5001": "https://127.0.0.1:5001",
        "ghcr.io": "https://ghcr.io",
    }

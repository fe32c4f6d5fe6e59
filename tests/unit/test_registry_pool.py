"""The registry pool re-reads credential Secrets and replaces clients built from old ones."""

from __future__ import annotations

import base64
import json

from imagedrift.core.mirrors import Mirror
from imagedrift.core.spec import parse_policy
from imagedrift.engine.registries import RegistryPool
from imagedrift.registry.oci import OciRegistryClient


class Secrets:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, bytes]] = {}
        self.reads = 0

    def read_secret(self, name: str) -> dict[str, bytes] | None:
        self.reads += 1
        return self.data.get(name)


def dockerconfig(host: str, password: str) -> dict[str, bytes]:
    auth = base64.b64encode(f"robot:{password}".encode()).decode()
    return {".dockerconfigjson": json.dumps({"auths": {host: {"auth": auth}}}).encode()}


def base(**extra: object) -> object:
    spec = {"base": {"image": "r.example/base", "tag": "1", **extra}}
    return parse_policy("p", spec).base


def test_a_rotated_docker_config_secret_gives_a_new_client_after_the_ttl() -> None:
    secrets, now = Secrets(), [0.0]
    secrets.data["regcred"] = dockerconfig("r.example", "old")
    pool = RegistryPool(secrets, namespace="ops", clock=lambda: now[0], secret_ttl=5)
    spec = base(secretRef={"name": "regcred"})
    first = pool.client_for("r.example", spec)  # type: ignore[arg-type]
    assert isinstance(first, OciRegistryClient) and first.credentials.password == "old"
    secrets.data["regcred"] = dockerconfig("r.example", "new")
    now[0] = 4.0
    assert pool.client_for("r.example", spec) is first  # type: ignore[arg-type]
    now[0] = 6.0  # the Secret is read again
    second = pool.client_for("r.example", spec)  # type: ignore[arg-type]
    assert isinstance(second, OciRegistryClient) and second.credentials.password == "new"
    assert first._http.is_closed, "the client built from the old credential is closed"
    assert secrets.reads == 2
    pool.close()


def test_a_rotated_service_principal_secret_builds_a_new_acr_client() -> None:
    secrets, now = Secrets(), [0.0]
    secrets.data["sp"] = {"clientSecret": b"old"}
    pool = RegistryPool(secrets, namespace="ops", clock=lambda: now[0], secret_ttl=5)
    spec = base(
        provider="azure",
        azure={
            "identity": "servicePrincipal",
            "clientId": "c",
            "tenantId": "t",
            "secretRef": {"name": "sp"},
        },
    )
    first = pool.client_for("r.example", spec)  # type: ignore[arg-type]
    secrets.data["sp"] = {"clientSecret": b"new"}
    now[0] = 6.0
    second = pool.client_for("r.example", spec)  # type: ignore[arg-type]
    assert second is not first
    assert pool.client_for("r.example", spec) is second  # type: ignore[arg-type]
    pool.close()


def test_a_mirrored_host_is_contacted_at_its_mirror() -> None:
    pool = RegistryPool(Secrets(), namespace="ops", mirrors={"docker.io": Mirror("m:5000", "http")})
    client = pool.client_for("docker.io", base())  # type: ignore[arg-type]
    assert isinstance(client, OciRegistryClient) and client.base_url == "http://m:5000"
    pool.close()

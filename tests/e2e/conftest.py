"""Fixtures every end-to-end test shares, and the snapshot the secret-leak check reads."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from imagedrift.registry.base import Credentials
from imagedrift.registry.oci import OciRegistryClient
from tests.e2e.scenario import World
from tests.e2e.support import make_world
from tests.harness import leaks
from tests.harness.acr_server import FakeAcr
from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.procs import wait_for
from tests.harness.registry import Registry
from tests.harness.registry_proxy import RegistryProxy
from tests.harness.tlsca import TestCA

OPERATOR_NS = "imagedrift-system"


@pytest.fixture
def cli(controlplane: ControlPlane) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*args)``: ``imagedrift ARGS`` as an SRE runs it, a subprocess on the test
    cluster's kubeconfig (or ``kubeconfig=``); its output is kept for the leak check."""

    def run(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or controlplane.kubeconfig
        assert config is not None
        result = subprocess.run(
            [sys.executable, "-m", "imagedrift.cli", *args],
            env={**os.environ, "KUBECONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        leaks.keep(f"imagedrift {' '.join(args)} stdout", result.stdout)
        leaks.keep(f"imagedrift {' '.join(args)} stderr", result.stderr)
        return result

    return run


@pytest.fixture
def world(registry: Registry, kube: Kube, namespace: str) -> Iterator[World]:
    """This test's images, workloads and policies; its policies are deleted afterwards."""
    with make_world(registry, kube, namespace) as w:
        yield w


@pytest.fixture
def operator_secrets(kube: Kube) -> Iterator[Callable[[str, dict[str, str]], str]]:
    """``make(name, data)``: a Secret in the operator's namespace, deleted afterwards."""
    made: list[str] = []

    def make(name: str, data: dict[str, str]) -> str:
        full = f"{name}-{uuid.uuid4().hex[:6]}"
        for key, value in data.items():
            leaks.remember(value, f"Secret {full} key {key}")
        kube.core.create_namespaced_secret(
            OPERATOR_NS,
            client.V1Secret(metadata=client.V1ObjectMeta(name=full), string_data=data),
        )
        made.append(full)
        return full

    yield make
    _delete_secrets(kube, made)


@pytest.fixture
def docker_config_secret(
    kube: Kube, crds_installed: None
) -> Iterator[Callable[[str, str, str], str]]:
    """``make(host, user, password)``: a dockerconfigjson Secret for ``host`` in the
    operator's namespace, deleted afterwards; its password and auth are remembered for the
    secret-leak check."""
    names: list[str] = []

    def make(host: str, user: str, password: str) -> str:
        name = f"regcred-{len(names)}-{uuid.uuid4().hex[:6]}"
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        leaks.remember(password, f"registry password in Secret {name}")
        leaks.remember(auth, f"auth in Secret {name}")
        config = {"auths": {host: {"auth": auth}}}
        kube.core.create_namespaced_secret(
            OPERATOR_NS,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=name),
                type="kubernetes.io/dockerconfigjson",
                data={".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
            ),
        )
        names.append(name)
        return name

    yield make
    _delete_secrets(kube, names)


@pytest.fixture
def pull_secret(
    docker_config_secret: Callable[[str, str, str], str], registry_proxy: RegistryProxy
) -> Callable[[str, str], str]:
    """``make(user, password)``: a dockerconfigjson Secret for ``registry_proxy``."""
    return lambda user, password: docker_config_secret(registry_proxy.host, user, password)


def _delete_secrets(kube: Kube, names: list[str]) -> None:
    for name in names:
        try:
            kube.core.delete_namespaced_secret(name, OPERATOR_NS)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After each test's body, before its teardown deletes policies and namespaces, keep
    what the cluster shows, so the leak check covers the whole run and not only what
    is left at its end."""
    try:
        return (yield)
    finally:
        kube = getattr(item, "funcargs", {}).get("kube")
        if isinstance(kube, Kube):
            # A test may have just restarted the API server: wait for it (bounded). A
            # snapshot still missing is named by the leak check, which then fails.
            def snapshot() -> bool:
                leaks.snapshot_cluster(kube)
                return True

            try:
                wait_for(
                    snapshot,
                    what="a snapshot of Events, statuses and annotations",
                    timeout=60,
                )
            except Exception as exc:
                leaks.missed_snapshot(item.nodeid, exc)


@pytest.fixture
def acr_world(fake_acr: FakeAcr, acr_tls: TestCA, kube: Kube, namespace: str) -> Iterator[World]:
    """A World whose images live in the fake ACR (pushed as its admin user)."""
    user, password = fake_acr.admin_user
    pusher = OciRegistryClient(
        fake_acr.host, Credentials(user, password, identity="acr admin"), verify=acr_tls.ca_cert
    )
    world = World(fake_acr.host, pusher, kube, namespace)
    try:
        yield world
    finally:
        world.cleanup()
        pusher.close()

"""Fixtures every end-to-end test shares, and the snapshot the secret-leak check reads."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Callable, Generator, Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.scenario import World
from tests.e2e.support import make_world
from tests.harness import leaks
from tests.harness.controlplane import Kube
from tests.harness.registry import Registry
from tests.harness.registry_proxy import RegistryProxy

OPERATOR_NS = "imagedrift-system"


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
def pull_secret(
    kube: Kube, registry_proxy: RegistryProxy, crds_installed: None
) -> Iterator[Callable[[str, str], str]]:
    """``make(user, password)``: a dockerconfigjson Secret for ``registry_proxy`` in the
    operator's namespace, deleted afterwards."""
    names: list[str] = []

    def make(user: str, password: str) -> str:
        name = f"regcred-{len(names)}-{registry_proxy.port}"
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        leaks.remember(password, f"registry password in Secret {name}")
        leaks.remember(auth, f"auth in Secret {name}")
        config = {"auths": {registry_proxy.host: {"auth": auth}}}
        kube.core.create_namespaced_secret(
            OPERATOR_NS,
            {
                "metadata": {"name": name},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {
                    ".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()
                },
            },
        )
        names.append(name)
        return name

    yield make
    _delete_secrets(kube, names)


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
            # A test may have stopped the API server: a missing snapshot is no failure.
            with contextlib.suppress(Exception):
                leaks.snapshot_cluster(kube)

"""Fixtures every end-to-end test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.scenario import World
from tests.e2e.support import make_world
from tests.harness.controlplane import Kube
from tests.harness.registry import Registry


@pytest.fixture
def world(registry: Registry, kube: Kube, namespace: str) -> Iterator[World]:
    """This test's images, workloads and policies; its policies are deleted afterwards."""
    with make_world(registry, kube, namespace) as w:
        yield w

"""Shared helpers of the gate, wave and kind end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from imagedrift.registry.push import Image
from tests.e2e.scenario import World, base_image, rolled_out
from tests.harness.controlplane import Kube
from tests.harness.git_server import GitServer
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry


@contextmanager
def make_world(registry: Registry, kube: Kube, namespace: str) -> Iterator[World]:
    client = registry.client()
    world = World(registry.host, client, kube, namespace)
    try:
        yield world
    finally:
        world.cleanup()
        client.close()


def base_spec(world: World, **extra: object) -> dict[str, object]:
    return {"image": world.ref("base"), "tag": "1", "interval": "2s", "insecure": True, **extra}


def drift(world: World, app: str, *, rebuilt_tag: str = "1.0.1") -> tuple[Image, Image, str]:
    """Publish base v1 and ``app:1.0.0`` on it, then base v2; return (old, new base,
    the rebuilt image's ref pinned by digest, not yet published)."""
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish(app, "1.0.0", world.app_on(old, "1.0.0"))
    world.publish("base", "1", new)
    rebuilt = world.app_on(new, rebuilt_tag)
    return old, new, f"{world.ref(app)}@{rebuilt.digest}"


def publish_rebuild(world: World, app: str, new: Image, tag: str = "1.0.1") -> str:
    return world.publish(app, tag, world.app_on(new, tag))


def policy_status(world: World, policy: str) -> dict[str, Any]:
    return dict(world.get_policy(policy).get("status") or {})


def wait_rolled(world: World, name: str, image: str, timeout: float = 90) -> None:
    wait_for(
        lambda: rolled_out(world, name, image), what=f"{name} rolled to {image}", timeout=timeout
    )


def rollouts(world: World, policy: str) -> list[dict[str, Any]]:
    return [
        dict(r)
        for entry in policy_status(world, policy).get("lineage") or []
        for r in entry.get("rollouts") or []
    ]


def checks_pass(operator: OperatorProcess, policy: str, count: int = 2) -> None:
    """Wait until the operator finished ``count`` more checks of ``policy``: a window in
    which "nothing happened" is proven over checks that ran, not over time or over base
    lookups (an unmoved base starts no check)."""
    start = operator.checks(policy)
    wait_for(
        lambda: operator.checks(policy) >= start + count,
        what=f"{count} more checks of {policy} (from {start})",
        timeout=60,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


# -- push deliveries, as registries send them ---------------------------------------------


def acr_push(repository: str, tag: str, host: str) -> dict[str, Any]:
    """An ACR webhook ``push`` delivery for ``host/repository:tag``."""
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2025-01-02T03:04:05.0000000Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": repository,
            "tag": tag,
            "digest": "sha256:" + "0" * 64,
        },
        "request": {"id": str(uuid.uuid4()), "host": host, "method": "PUT"},
    }


def event_grid_push(push: Mapping[str, Any]) -> dict[str, Any]:
    """The Event Grid ``ImagePushed`` event that carries the ACR delivery ``push``."""
    target = push["target"]
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/sub/resourceGroups/rg/providers/"
        "Microsoft.ContainerRegistry/registries/fake",
        "subject": f"{target['repository']}:{target['tag']}",
        "eventType": "Microsoft.ContainerRegistry.ImagePushed",
        "eventTime": "2025-01-02T03:04:05Z",
        "data": dict(push),
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }


def touched_checks(
    world: World,
    operator: OperatorProcess,
    policies: str | Sequence[str],
    kind: str,
    name: str,
    count: int = 2,
) -> None:
    """Make the operator check ``policies`` ``count`` more times while nothing else moves.

    A policy that is up to date (or in Conflict, waiting for a human) is checked only when
    something changes, so ``checks_pass`` would wait in vain: an unrelated label is set on
    the workload (as any other hand might) and the check each change brings is awaited.
    """
    names = [policies] if isinstance(policies, str) else list(policies)
    patch = {
        "StatefulSet": world.kube.apps.patch_namespaced_stateful_set,
        "Deployment": world.kube.apps.patch_namespaced_deployment,
    }[kind]
    for i in range(count):
        start = {p: operator.checks(p) for p in names}

        def checked(start: dict[str, int] = start) -> bool:
            return all(operator.checks(p) > n for p, n in start.items())

        patch(name, world.namespace, {"metadata": {"labels": {"example.test/touched": str(i)}}})
        wait_for(checked, what=f"a check of {', '.join(names)} after {kind} {name} was touched")


def git_access(
    operator_secrets: Callable[[str, dict[str, str]], str], server: GitServer, **extra: str
) -> dict[str, str]:
    """The operator's environment for GitOps write-back to ``server``: a Secret with its
    credentials (and ``extra`` keys, e.g. a pull-request ``token``) and the index Secret
    naming it for the server's URLs, both in the operator's namespace."""
    user, password = server.credentials
    creds = operator_secrets("git", {"username": user, "password": password, **extra})
    index = operator_secrets("git-index", {"repositories": f"{server.base_url}/ {creds}\n"})
    return {"IMAGEDRIFT_GIT_SECRET": index}

"""The real operator against a registry that lies about its base image, end to end.

Each case: the policy says why it cannot use the base, the operator's peak RSS stays under
the memory limit deploy/ gives it (512 MiB), and the workload on the policy is not rolled.
The redirect case is the honest one: a blob served from another host, where the
registry's credentials must not follow.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.e2e.scenario import World, base_image
from tests.harness.lying_registry import OCI_INDEX, OCI_MANIFEST, LyingRegistry, MiB
from tests.harness.operator import OperatorProcess
from tests.harness.procs import proc_status

MEMORY_LIMIT_MIB = 512  # deploy/base/deployment.yaml resources.limits.memory
REPOSITORY = "lie/base"
MANIFEST = f"/v2/{REPOSITORY}/manifests/1"


def peak_rss_mib(pid: int) -> float:
    return proc_status(pid, "VmHWM") / 1024


def honest_base(registry: LyingRegistry) -> tuple[str, str]:
    """A one-layer image under tag 1: (manifest digest, config digest)."""
    layer = registry.put_blob(REPOSITORY, b"os files")
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    config_digest = registry.put_blob(REPOSITORY, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer,
                "size": len(b"os files"),
            }
        ],
    }
    digest = registry.put_manifest(REPOSITORY, json.dumps(manifest).encode(), tag="1")
    return digest, config_digest


def huge_index(children: int) -> bytes:
    child = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1}
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * children}
    return json.dumps(body).encode()


@pytest.fixture
def lying_world(
    world: World,
    lying_registry: LyingRegistry,
    docker_config_secret: Callable[[str, str, str], str],
) -> Callable[..., tuple[str, OperatorProcess]]:
    """``start(lie, operator_factory, env=..., credentials=(user, password))``: a workload
    on an honest app registry, a policy whose base lives on the lying registry (behind
    basic auth with ``credentials``), ``lie(registry)`` applied, the operator started.
    Returns (the policy's name, the operator)."""

    def start(
        lie: Callable[[LyingRegistry], None],
        operator_factory: Callable[..., OperatorProcess],
        *,
        env: dict[str, str] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> tuple[str, OperatorProcess]:
        old = base_image("v1")
        world.publish("base", "1", old)
        world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
        world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"lie-{world.suffix}")
        honest_base(lying_registry)
        base: dict[str, object] = {
            "image": f"{lying_registry.host}/{REPOSITORY}",
            "tag": "1",
            "interval": "2s",
            "insecure": True,
        }
        if credentials is not None:
            lying_registry.require_basic(*credentials)
            name = docker_config_secret(lying_registry.host, *credentials)
            base["secretRef"] = {"name": name}
        lie(lying_registry)
        app = {"tags": {"semver": {"range": "*"}}, "insecureRegistries": [world.host]}
        policy = world.policy("lie", {"base": base, "app": app})
        return policy, operator_factory(env=env)

    return start


CASES = {
    "chunked 200 MiB manifest": (
        lambda r: r.oversized(MANIFEST, 200 * MiB),
        {},
        "more than the 4194304 bytes allowed",
    ),
    "false Content-Length": (
        lambda r: r.oversized(MANIFEST, 200 * MiB, declared=300 * MiB),
        {},
        "more than the 4194304 bytes allowed",
    ),
    "digest that does not match": (
        lambda r: r.wrong_digest(f"/v2/{REPOSITORY}/manifests/{honest_base(r)[0]}"),
        {},
        "does not match",
    ),
    "body that trickles": (
        lambda r: r.trickle(MANIFEST, 600),
        {"IMAGEDRIFT_MAX_BODY_SECONDS": "2"},
        "took more than the 2 s allowed",
    ),
    "index with 100,000 children": (
        lambda r: r.put_manifest(REPOSITORY, huge_index(100_000), tag="1", media_type=OCI_INDEX),
        {"IMAGEDRIFT_MAX_MANIFEST_BYTES": str(64 * MiB)},
        "100000",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_lie_shows_its_reason_in_bounded_memory_and_rolls_nothing(
    world: World,
    lying_world: Callable[..., tuple[str, OperatorProcess]],
    operator_factory: Callable[..., OperatorProcess],
    case: str,
) -> None:
    lie, env, reason = CASES[case]
    policy, operator = lying_world(lie, operator_factory, env=env)
    body = world.wait_ready(policy, status="False", timeout=90)
    message = world.condition(policy)["message"]
    peak = peak_rss_mib(operator.proc.pid)
    print(f"{case}: Ready=False {body['status']['conditions'][0]['reason']}: {message[:160]}")
    print(f"{case}: operator peak RSS {peak:.0f} MiB (limit {MEMORY_LIMIT_MIB} MiB)")
    assert reason in message, message
    assert peak < MEMORY_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
    assert world.image_of("web") == f"{world.ref('app')}:1.0.0", "nothing is rolled"


def test_a_blob_redirected_to_another_host_is_read_without_the_registry_credentials(
    world: World,
    lying_world: Callable[..., tuple[str, OperatorProcess]],
    operator_factory: Callable[..., OperatorProcess],
    lying_storage: LyingRegistry,
) -> None:
    """Registries send blobs to storage on another host; Authorization stays behind."""

    def lie(registry: LyingRegistry) -> None:
        _, config = honest_base(registry)
        path = f"/v2/{REPOSITORY}/blobs/{config}"
        data = registry._answer_for(path)[1]
        assert data is not None
        lying_storage.put_document(f"/storage/{config}", data[0], "application/octet-stream")
        registry.redirect(path, f"{lying_storage.url}/storage/{config}")

    policy, _ = lying_world(lie, operator_factory, credentials=("robot", "lying-password-1"))
    try:
        # Ready, and waiting: the workload's app was built on another base.
        body = world.wait_ready(policy, reason="WaitingForRebuild", timeout=90)
    except TimeoutError:
        raise AssertionError(f"policy never Ready: {world.condition(policy)}") from None
    assert body["status"]["base"]["digest"]
    storage = [s for s in lying_storage.seen if s.path.startswith("/storage/")]
    assert storage, "the config blob was fetched from storage"
    assert all(s.authorization == "" for s in storage), "credentials followed the redirect"

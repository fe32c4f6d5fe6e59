"""The real operator against a registry that lies about its base image, end to end.

The world is one where an honest registry makes the operator roll: the workload runs app
``1.0.0``, built on a base that the lying registry's ``lie/base`` served before, and app
``1.0.1``, rebuilt on the base that ``lie/base:1`` serves now, waits in the app registry.
The control case proves it: with no lie, the workload is rolled to ``1.0.1``.

Each lie then carries the real new base where a broken client would swallow it (the
manifest padded with whitespace, the manifest under a digest it does not hash to, an index
whose 100,000 children are the manifest, the manifest trickled in). Each case: the policy
says why it cannot use the base, the operator's peak RSS stays under the memory limit
deploy/ gives it (512 MiB), and the workload is not rolled, over further checks too; an
operator that believed the lie would roll it. The redirect case is the honest one: a blob
served from another host, where the registry's credentials must not follow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from imagedrift.registry.push import Image
from tests.e2e.scenario import World, base_image
from tests.e2e.support import checks_pass, wait_rolled
from tests.harness.lying_registry import OCI_INDEX, LyingRegistry, MiB, padded_digest
from tests.harness.operator import OperatorProcess
from tests.harness.procs import proc_status, wait_for

MEMORY_LIMIT_MIB = 512  # deploy/base/deployment.yaml resources.limits.memory
REPOSITORY = "lie/base"
SERVED = 200 * MiB
# Pieces of the trickled manifest, one a second: well past the 2 s the case allows, and
# short enough that an operator without the deadline reads it all and rolls.
TRICKLE_PIECES = 10

# lie(registry, new base): told after the honest content is stored.
Lie = Callable[[LyingRegistry, Image], None]


def manifest_path(reference: str) -> str:
    return f"/v2/{REPOSITORY}/manifests/{reference}"


def peak_rss_mib(operator: OperatorProcess) -> float:
    assert operator.proc is not None
    return proc_status(operator.proc.pid, "VmHWM") / 1024


def serve(registry: LyingRegistry, image: Image, tag: str = "") -> str:
    """Store ``image`` honestly (layers, config, manifest) in ``lie/base`` under its
    digest (and ``tag``); return the digest."""
    for layer in image.layers:
        registry.put_blob(REPOSITORY, layer.blob)
    registry.put_blob(REPOSITORY, image.config_bytes())
    return registry.put_manifest(REPOSITORY, image.manifest_bytes(), tag=tag)


@dataclass(frozen=True)
class Started:
    """A started world: the policy, the operator, what ``web`` runs, and the rebuilt
    image (pinned by digest) an honest base makes the operator roll ``web`` to."""

    policy: str
    operator: OperatorProcess
    running: str
    rebuilt: str
    new_base: Image


@pytest.fixture
def lying_world(
    world: World,
    lying_registry: LyingRegistry,
    docker_config_secret: Callable[[str, str, str], str],
) -> Callable[..., Started]:
    """``start(lie, operator_factory, env=..., credentials=(user, password))``.

    In ``lie/base`` on the lying registry: base v1 by digest (tag ``1`` pointed at it when
    app 1.0.0 was built) and base v2 under tag ``1`` (behind basic auth with
    ``credentials``). In the app registry: ``app:1.0.0`` built on v1 and annotated so
    (base digest and name), run by Deployment ``web``; ``app:1.0.1`` built on v2 and not
    annotated, so its lineage is its layers: whatever digest the operator comes to
    believe the base has (a padded body hashes to another), 1.0.1 sits on it as long as
    the layers are the new base's. Then ``lie(registry, v2)`` and the operator started.
    """

    def start(
        lie: Lie,
        operator_factory: Callable[..., OperatorProcess],
        *,
        env: dict[str, str] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> Started:
        old, new = base_image("v1"), base_image("v2")
        serve(lying_registry, old)
        serve(lying_registry, new, tag="1")
        base_name = f"{lying_registry.host}/{REPOSITORY}:1"
        world.publish("app", "1.0.0", world.app_on(old, "1.0.0", base_name=base_name))
        rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1", annotate="none"))
        running = f"{world.ref('app')}:1.0.0"
        world.deployment("web", running, policy=f"lie-{world.suffix}")
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
        lie(lying_registry, new)
        app = {"tags": {"semver": {"range": "*"}}, "insecureRegistries": [world.host]}
        policy = world.policy("lie", {"base": base, "app": app})
        return Started(
            policy, operator_factory(env=env), running, f"{world.ref('app')}@{rebuilt}", new
        )

    return start


def padded_manifest(registry: LyingRegistry, new: Image) -> None:
    """Tag 1 answers the new base's manifest and spaces, 200 MiB in all, chunked: still
    that manifest as JSON. The same bytes are served under their own digest, where a
    client that read them whole would look next."""
    body = new.manifest_bytes()
    for path in (manifest_path("1"), manifest_path(padded_digest(body, SERVED))):
        registry.oversized(path, SERVED, body=body)


def falsely_long_manifest(registry: LyingRegistry, new: Image) -> None:
    """Tag 1 claims 300 MiB and sends the padded manifest, 200 MiB, then hangs up."""
    registry.oversized(manifest_path("1"), SERVED, declared=300 * MiB, body=new.manifest_bytes())


def manifest_off_its_digest(registry: LyingRegistry, new: Image) -> None:
    """Tag 1 resolves honestly; the manifest by that digest is the new base's with one
    byte more, which no longer hashes to it."""
    registry.wrong_digest(manifest_path(new.digest))


def trickled_manifest(registry: LyingRegistry, new: Image) -> None:
    """Tag 1 answers the new base's manifest, whole and correct, a piece a second."""
    registry.trickle(manifest_path("1"), TRICKLE_PIECES, body=new.manifest_bytes())


def crowded_index(registry: LyingRegistry, new: Image) -> None:
    """Tag 1 is an index listing the new base's manifest (its real descriptor, platform
    included) 100,000 times: about 20 MiB, under the case's 64 MiB byte limit."""
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [new.index_entry()] * 100_000}
    registry.put_manifest(REPOSITORY, json.dumps(body).encode(), tag="1", media_type=OCI_INDEX)


CASES: dict[str, tuple[Lie, dict[str, str], str]] = {
    "chunked 200 MiB manifest": (padded_manifest, {}, "more than the 4194304 bytes allowed"),
    "false Content-Length": (falsely_long_manifest, {}, "more than the 4194304 bytes allowed"),
    "digest that does not match": (manifest_off_its_digest, {}, "does not match"),
    "body that trickles": (
        trickled_manifest,
        {"IMAGEDRIFT_MAX_BODY_SECONDS": "2"},
        "took more than the 2 s allowed",
    ),
    "index with 100,000 children": (
        crowded_index,
        {"IMAGEDRIFT_MAX_MANIFEST_BYTES": str(64 * MiB)},
        "lists 100000 entries, more than the 1000 allowed",
    ),
}


def test_with_no_lie_the_same_world_rolls_to_the_rebuild(
    world: World,
    lying_world: Callable[..., Started],
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """The control: what makes "nothing is rolled" below mean something. Waited for to
    the end (rolled out, UpToDate): the operator is stopped at teardown, not mid-rollout."""
    started = lying_world(lambda registry, new: None, operator_factory)
    wait_rolled(world, "web", started.rebuilt)
    body = world.wait_ready(started.policy, reason="UpToDate")
    assert body["status"]["base"]["digest"] == started.new_base.digest


@pytest.mark.parametrize("case", list(CASES))
def test_each_lie_shows_its_reason_in_bounded_memory_and_rolls_nothing(
    world: World,
    lying_world: Callable[..., Started],
    operator_factory: Callable[..., OperatorProcess],
    case: str,
) -> None:
    lie, env, reason = CASES[case]
    started = lying_world(lie, operator_factory, env=env)
    policy = started.policy

    def outcome() -> str:
        """What the operator made of the base: "rolled" or "refused" ("" not yet)."""
        if world.image_of("web") != started.running:
            return "rolled"
        return "refused" if world.condition(policy).get("status") == "False" else ""

    first = wait_for(outcome, what=f"{policy} refused its base, or web rolled", timeout=90)
    assert first == "refused", f"web rolled to {world.image_of('web')}: the lie was believed"
    # A refusal once is not enough: later checks, with the lie no less believable, must
    # not come round to it either.
    checks_pass(started.operator, policy, 2)
    image = world.image_of("web")
    condition = world.condition(policy)
    message = condition["message"]
    peak = peak_rss_mib(started.operator)
    print(f"{case}: Ready={condition['status']} {condition['reason']}: {message[:160]}")
    print(f"{case}: operator peak RSS {peak:.0f} MiB (limit {MEMORY_LIMIT_MIB} MiB)")
    assert image == started.running, f"rolled to {image}: the lie was believed"
    assert reason in message, message
    assert peak < MEMORY_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"


def test_a_blob_redirected_to_another_host_is_read_without_the_registry_credentials(
    world: World,
    lying_world: Callable[..., Started],
    operator_factory: Callable[..., OperatorProcess],
    lying_storage: LyingRegistry,
) -> None:
    """Registries send blobs to storage on another host; Authorization stays behind."""

    def lie(registry: LyingRegistry, new: Image) -> None:
        path = f"/v2/{REPOSITORY}/blobs/{new.config_digest}"
        storage = f"/storage/{new.config_digest}"
        lying_storage.put_document(storage, new.config_bytes(), "application/octet-stream")
        registry.redirect(path, f"{lying_storage.url}{storage}")

    started = lying_world(lie, operator_factory, credentials=("robot", "lying-password-1"))
    # The base's config came from storage, and the operator acted on it: it rolled.
    wait_rolled(world, "web", started.rebuilt)
    world.wait_ready(started.policy, reason="UpToDate")
    storage = [s for s in lying_storage.seen if s.path.startswith("/storage/")]
    assert storage, "the config blob was fetched from storage"
    assert all(s.authorization == "" for s in storage), "credentials followed the redirect"

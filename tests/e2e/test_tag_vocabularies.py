"""Tag vocabularies end to end on the real registry: what users bring from Flux, Argo CD
Image Updater and Keel means here what it means there.

Flux's ``exclusionList`` (default ``^.*\\.sig$``): a repository holding cosign signature
tags never yields one as a candidate, and no request is spent on such a tag. ACR continuous
patching: a base followed with its patch tags, and an app image Copa patched in place.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagedrift.core.conditions import timestamp as stamp
from imagedrift.core.lineage import COPA_PATCHED_KEY
from imagedrift.registry.push import Image
from tests.e2e.scenario import World, base_image, layer, rolled_out
from tests.e2e.support import base_spec, ok_json
from tests.harness.admission import admit_policy, policy_refusal
from tests.harness.controlplane import Kube
from tests.harness.operator import OperatorProcess
from tests.harness.procs import wait_for
from tests.harness.registry import Registry


def test_cosign_signature_tags_are_never_candidates_and_cost_no_request(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "1.0.0", world.app_on(old, "1.0.0"))
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"sig-{world.suffix}", replicas=1)
    world.publish("base", "1", new)
    rebuilt = world.publish("app", "1.0.1", world.app_on(new, "1.0.1"))
    # A signature as cosign stores it: tag sha256-<digest of the signed image>.sig. It is
    # built on the new base too, so nothing but the exclusion keeps it from qualifying.
    signature = f"sha256-{rebuilt.split(':', 1)[1]}.sig"
    world.publish("app", signature, world.app_on(new, "signature"))
    mark = registry.mark()
    # Alphabetical order, newest last: "sha256-…" sorts after "1.0.1", so without the
    # exclusion list the signature would be the first tag inspected.
    policy = world.policy(
        "sig",
        {
            "base": base_spec(world),
            "app": {"tags": {"regex": {"pattern": "^.*$", "order": "alphabetical"}}},
        },
    )
    operator_factory()

    target = f"{world.ref('app')}@{rebuilt}"
    wait_for(lambda: rolled_out(world, "web", target), what="web rolled to 1.0.1", timeout=90)
    body = world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert body["status"]["lineage"][0]["tag"] == "1.0.1"
    spent = registry.requests_since(mark, path=signature)
    assert spent == [], [f"{r.method} {r.path}" for r in spent]
    listed = registry.requests_since(mark, path=f"/v2/{world.repo('app')}/tags/list")
    assert listed, "the tags were listed (the exclusion applies to what the list returned)"


def following_patches(
    world: World, operator_factory: Callable[..., OperatorProcess], mode: str
) -> str:
    """A policy on base tag 1 with ``patches: mode``, Ready on the original tag."""
    original = world.publish("base", "1", base_image("v1"))
    policy = world.policy(mode, {"base": base_spec(world, patches=mode)})
    operator_factory()
    base = world.wait_ready(policy, reason="UpToDate")["status"]["base"]
    assert (base["tag"], base["digest"]) == ("1", original)
    return policy


def base_moves_to(world: World, policy: str, digest: str) -> dict[str, Any]:
    body = world.wait_policy(
        policy,
        lambda b: (b.get("status") or {}).get("base", {}).get("digest") == digest,
        f"the base moved to {digest[:19]}",
        timeout=60,
    )
    return dict(body["status"]["base"])


def test_a_base_followed_with_incremental_patch_tags_moves_to_t2_and_not_to_t1000(
    world: World, registry: Registry, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """ACR continuous patching pushes ``T-1`` … ``T-999`` made from ``T``; ``T-1000`` is no
    patch (ACR treats a suffix above 999 as an original tag)."""
    policy = following_patches(world, operator_factory, "incremental")
    patched = world.publish("base", "1-2", base_image("v1-patched-2"))
    assert base_moves_to(world, policy, patched)["tag"] == "1-2"
    world.wait_event(policy, "BaseChanged", anywhere=True)

    world.publish("base", "1-1000", base_image("v1-not-a-patch"))
    # Three more lookups (each lists the tags, then reads the newest patch): still on 1-2.
    mark = registry.mark()
    listing = f"/v2/{world.repo('base')}/tags/list"
    wait_for(
        lambda: len(registry.requests_since(mark, path=listing)) >= 3,
        what="three more lookups of the base's tags",
        timeout=60,
    )
    base = world.wait_ready(policy, reason="UpToDate")["status"]["base"]
    assert (base["tag"], base["digest"]) == ("1-2", patched)
    assert not registry.requests_since(mark, path=f"/v2/{world.repo('base')}/manifests/1-1000")


def test_a_base_followed_with_the_floating_patch_tag_moves_when_it_appears(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    policy = following_patches(world, operator_factory, "floating")
    patched = world.publish("base", "1-patched", base_image("v1-patched"))
    assert base_moves_to(world, policy, patched)["tag"] == "1-patched"


@pytest.mark.parametrize("accept", [True, False], ids=["acceptPatched", "rebuild-only"])
def test_a_copa_patched_app_rolls_only_when_the_policy_accepts_patched_images(
    world: World, operator_factory: Callable[..., OperatorProcess], accept: bool
) -> None:
    """App 1.4.0 on base B; B is re-published; the registry gains 1.4.0-1 as Copa builds it
    (the original layers plus one patch layer, the original annotations, and
    sh.copa.image.patched), patched after the base changed."""
    now = datetime.now(UTC)
    old = base_image("v1")
    new = dataclasses.replace(base_image("v2"), created=stamp(now - timedelta(hours=1)))
    world.publish("base", "1", old)
    app = world.app_on(old, "1.4.0")
    assert isinstance(app, Image)
    world.publish("app", "1.4.0", app)
    world.deployment("web", f"{world.ref('app')}:1.4.0", policy=f"copa-{world.suffix}", replicas=1)
    world.publish("base", "1", new)
    patched = app.derive(
        layer("copa: OS package updates"),
        annotations={**app.annotations, COPA_PATCHED_KEY: stamp(now)},
        created=stamp(now),
    )
    digest = world.publish("app", "1.4.0-1", patched)
    policy = world.policy(
        "copa",
        {
            "base": base_spec(world),
            "app": {
                "tags": {"semver": {"range": ">=1.4.0"}},
                "patches": "incremental",
                "acceptPatched": accept,
            },
        },
    )
    operator_factory()

    if accept:
        target = f"{world.ref('app')}@{digest}"
        wait_for(lambda: rolled_out(world, "web", target), what="web on 1.4.0-1", timeout=90)
        item = wait_for(
            lambda: (lambda i: i if i.get("state") == "Patched" else None)(
                world.item(policy, "web")
            ),
            what="web Patched",
            timeout=60,
        )
        assert "patched in place" in item["reason"] and "accepted" in item["reason"], item
        body = world.wait_ready(policy, reason="UpToDate", timeout=60)
        entry = body["status"]["lineage"][0]
        assert (entry["tag"], entry["appDigest"], entry["verdict"]) == ("1.4.0-1", digest, "Passed")
        assert any("patched in place" in r for r in entry["reasons"]), entry
        # Never mistaken for an image built on the new base: lineage names the old one.
        assert item.get("baseDigest") == old.digest, item
    else:
        body = world.wait_ready(policy, reason="WaitingForRebuild", timeout=60)
        item = world.item(policy, "web")
        assert item["state"] == "Drifted", item
        assert "1.4.0-1: patched in place" in item["reason"], item
        assert world.image_of("web") == f"{world.ref('app')}:1.4.0"


# --- the vocabularies users bring, at admission and on the real registry -------------------

VOCABULARIES = [
    {"semver": {"range": ">=1.0.0", "pattern": "^(?P<v>.*)-alpine$", "extract": "$v"}},
    {"semver": {"range": ">=1.0.0", "strict": True}},
    {"regex": {"pattern": "^build-(?P<n>[0-9]+)$", "extract": "$n", "order": "numerical"}},
    {"calver": {"layout": "vYYYY-0M-0D"}},
    {"calver": {}},
    {"newestBuild": {}},
    {"keel": {"level": "minor", "matchPreRelease": False}},
    {"force": {"matchTag": True}},
]


REVISION = "deployment.kubernetes.io/revision"

# The base of the admission checks below, shaped as base_spec() writes it for the registry;
# a server-side dry run stores nothing, so no registry, namespace or cleanup is needed.
ADMISSION_BASE = {
    "image": "127.0.0.1:5000/vocab/base",
    "tag": "1",
    "interval": "2s",
    "insecure": True,
}


@pytest.mark.parametrize("tags", VOCABULARIES, ids=lambda t: next(iter(t)))
def test_each_vocabulary_is_admitted(
    kube: Kube, crds_installed: None, tags: dict[str, Any]
) -> None:
    app: dict[str, Any] = {"tags": tags}
    if "sameTag" not in tags and "force" not in tags:
        app |= {"allowTags": "regexp:^[0-9v]", "ignoreTags": ["*-debug"]}
    admitted = admit_policy(kube, "vocab", {"base": ADMISSION_BASE, "app": app})
    assert admitted["spec"]["app"]["tags"].keys() == tags.keys(), admitted["spec"]["app"]


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (
            {"tags": {"semver": {"range": "*", "extract": "$v"}}},
            "semver.extract needs semver.pattern",
        ),
        ({"tags": {"semver": {"range": "*", "pattern": "(x"}}}, "semver.pattern is not a valid"),
        ({"tags": {"keel": {"level": "newest"}}}, 'Unsupported value: "newest"'),
        ({"tags": {"keel": {}}}, "level: Required value"),
        ({"tags": {"calver": {"layout": "YYYY/0M"}}}, "spec.app.tags.calver.layout"),
        ({"tags": {"newestBuild": {}}, "patches": "incremental"}, "newestBuild already orders"),
        ({"allowTags": "regexp:^1"}, "sameTag follows the running tag only"),
        ({"tags": {"calver": {}}, "allowTags": "glob:*"}, "write regexp:<expression> or any"),
        ({"tags": {"calver": {}}, "allowTags": "regexp:(x"}, "not a valid regular expression"),
        ({"tags": {"calver": {}, "keel": {"level": "all"}}}, "spec.app.tags: Too many: 2"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_vocabulary_combinations_are_refused_at_admission(
    kube: Kube, crds_installed: None, app: dict[str, Any], message: str
) -> None:
    refusal = policy_refusal(kube, "vocab", {"base": ADMISSION_BASE, "app": app})
    assert message in refusal, refusal


def test_keel_minor_takes_the_highest_minor_and_plan_says_why_each_tag_was_skipped(
    world: World,
    operator_factory: Callable[..., OperatorProcess],
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "1.4.0", world.app_on(old, "1.4.0"))
    world.deployment("web", f"{world.ref('app')}:1.4.0", policy=f"keel-{world.suffix}", replicas=1)
    world.publish("base", "1", new)
    digests = {
        tag: world.publish("app", tag, world.app_on(new, tag))
        for tag in ("1.4.1", "1.5.0", "2.0.0", "1.6.0-rc.1", "1.5.0-debug")
    }
    world.publish("app", "1.3.9", world.app_on(old, "1.3.9"))
    policy = world.policy(
        "keel",
        {
            "base": base_spec(world),
            "app": {"tags": {"keel": {"level": "minor"}}, "ignoreTags": ["*-debug"]},
        },
    )

    # The dry run first, before any operator runs: what the next check would do, per tag.
    plan = ok_json(cli("plan", policy, "-o", "json"))
    (group,) = plan["tags"]
    assert (group["runningTag"], group["policy"], group["candidate"]) == (
        "1.4.0",
        "keel minor",
        "1.5.0",
    )
    fates = {t["tag"]: (t["fate"], t["reason"]) for t in group["tags"]}
    assert fates["1.5.0"] == ("taken", "Passed")
    assert fates["1.4.1"] == ("not inspected", "1.5.0 is newer and was taken")
    assert fates["2.0.0"] == ("ineligible", "a major bump; level minor stays on 1.x")
    assert fates["1.6.0-rc.1"][0] == "ineligible" and "matchPreRelease" in fates["1.6.0-rc.1"][1]
    assert fates["1.5.0-debug"] == ("ignored", "matches ignoreTags '*-debug'")
    assert fates["1.3.9"] == ("ineligible", "not higher than the running 1.4.0")
    assert world.image_of("web") == f"{world.ref('app')}:1.4.0", "a plan changes nothing"

    operator_factory()
    target = f"{world.ref('app')}@{digests['1.5.0']}"
    wait_for(lambda: rolled_out(world, "web", target), what="web on 1.5.0", timeout=90)
    body = world.wait_ready(policy, reason="UpToDate", timeout=60)
    assert body["status"]["lineage"][0]["tag"] == "1.5.0"


def test_a_numerical_policy_over_a_tag_that_is_no_number_fails_closed(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Flux's numerical policy errors on a value that is not a number rather than skipping
    it; so does imagedrift, and the workload says why it holds."""
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)
    world.publish("app", "build-1", world.app_on(old, "1"))
    world.deployment(
        "web", f"{world.ref('app')}:build-1", policy=f"numeric-{world.suffix}", replicas=1
    )
    world.publish("base", "1", new)
    world.publish("app", "build-2", world.app_on(new, "2"))
    world.publish("app", "build-x", world.app_on(new, "x"))
    policy = world.policy(
        "numeric",
        {
            "base": base_spec(world),
            "app": {
                "tags": {
                    "regex": {"pattern": "^build-(?P<n>.*)$", "extract": "$n", "order": "numerical"}
                }
            },
        },
    )
    operator_factory()
    item = wait_for(
        lambda: (lambda i: i if "not a number" in i.get("reason", "") else None)(
            world.item(policy, "web")
        ),
        what="web held back: a tag that is no number",
        timeout=60,
    )
    assert item["state"] == "Drifted", item
    assert "'build-x' extracts 'x', which is not a number" in item["reason"], item
    assert world.image_of("web") == f"{world.ref('app')}:build-1"
    revision = world.get_deployment("web")["metadata"]["annotations"].get(REVISION)
    assert revision == "1", "nothing rolled"


def test_newest_build_rolls_to_the_image_built_last(
    world: World, operator_factory: Callable[..., OperatorProcess]
) -> None:
    """Argo CD's newest-build: the config's created time orders the tags, not their names."""
    now = datetime.now(UTC)
    old, new = base_image("v1"), base_image("v2")
    world.publish("base", "1", old)

    def built(base: Image, marker: str, hours_ago: int) -> Image:
        image = world.app_on(base, marker)
        assert isinstance(image, Image)  # built on a single-platform base
        return dataclasses.replace(image, created=stamp(now - timedelta(hours=hours_ago)))

    world.publish("app", "a1b2c3d", built(old, "a1b2c3d", 48))
    world.deployment("web", f"{world.ref('app')}:a1b2c3d", policy=f"nb-{world.suffix}", replicas=1)
    world.publish("base", "1", new)
    newest = world.publish("app", "0f0f0f0", built(new, "0f0f0f0", 1))  # sorts first by name
    world.publish("app", "ffff000", built(new, "ffff000", 5))  # sorts last by name, built earlier
    latest = world.app_on(new, "latest")
    assert isinstance(latest, Image)
    world.publish("app", "latest", dataclasses.replace(latest, created=""))
    policy = world.policy(
        "nb",
        {
            "base": base_spec(world),
            "app": {"tags": {"newestBuild": {}}, "allowTags": "regexp:^[0-9a-f]{7}$"},
        },
    )
    operator_factory()
    target = f"{world.ref('app')}@{newest}"
    wait_for(lambda: rolled_out(world, "web", target), what="web on 0f0f0f0", timeout=90)
    assert (
        world.wait_ready(policy, reason="UpToDate", timeout=60)["status"]["lineage"][0]["tag"]
        == "0f0f0f0"
    )

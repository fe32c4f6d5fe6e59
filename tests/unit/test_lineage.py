"""Table tests for lineage: annotation, label, layer prefix, multi-arch, different base."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from imagedrift.core import history
from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.images import ImageManifest, Platform, ResolvedImage
from imagedrift.core.lineage import (
    BASE_DIGEST_KEY,
    BASE_NAME_KEY,
    BaseDigest,
    Source,
    built_on,
    remediated_in_place,
    trace,
)
from imagedrift.core.refs import ImageRef

AMD, ARM = Platform("linux", "amd64"), Platform("linux", "arm64")
REF = ImageRef.parse("127.0.0.1:5000/team/app:1")


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def single(
    digest: int,
    layers: tuple[int, ...],
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> ResolvedImage:
    manifest = ImageManifest(
        d(digest),
        "application/vnd.oci.image.manifest.v1+json",
        d(digest + 1000),
        tuple(d(x) for x in layers),
        dict(annotations or {}),
        dict(labels or {}),
        AMD,
    )
    return ResolvedImage(REF, d(digest), manifest.media_type, (manifest,), dict(annotations or {}))


def index(
    digest: int,
    per_platform: dict[Platform, tuple[int, tuple[int, ...]]],
    annotations: Mapping[str, str] | None = None,
) -> ResolvedImage:
    manifests = tuple(
        ImageManifest(
            d(md),
            "application/vnd.oci.image.manifest.v1+json",
            d(md + 1000),
            tuple(d(x) for x in layers),
            {},
            {},
            p,
        )
        for p, (md, layers) in per_platform.items()
    )
    return ResolvedImage(
        REF,
        d(digest),
        "application/vnd.oci.image.index.v1+json",
        manifests,
        dict(annotations or {}),
    )


OLD_BASE = BaseDigest.of(single(1, (10, 11)))
NEW_BASE = BaseDigest.of(single(2, (10, 12)))
MULTI_BASE = BaseDigest.of(index(3, {AMD: (31, (10, 13)), ARM: (32, (20, 23))}))

CASES = [
    # label, app image, known bases, expected base digest, expected source
    (
        "annotation on manifest",
        single(100, (99,), {BASE_DIGEST_KEY: d(2)}),
        [NEW_BASE, OLD_BASE],
        d(2),
        Source.ANNOTATION,
    ),
    (
        "label in config",
        single(101, (99,), labels={BASE_DIGEST_KEY: d(1)}),
        [NEW_BASE, OLD_BASE],
        d(1),
        Source.LABEL,
    ),
    (
        "annotation wins over label",
        single(102, (99,), {BASE_DIGEST_KEY: d(2)}, {BASE_DIGEST_KEY: d(1)}),
        [NEW_BASE, OLD_BASE],
        d(2),
        Source.ANNOTATION,
    ),
    (
        "layer prefix, new base",
        single(103, (10, 12, 50)),
        [NEW_BASE, OLD_BASE],
        d(2),
        Source.LAYERS,
    ),
    (
        "layer prefix, old base",
        single(104, (10, 11, 50)),
        [NEW_BASE, OLD_BASE],
        d(1),
        Source.LAYERS,
    ),
    ("no match at all", single(105, (7, 8)), [NEW_BASE, OLD_BASE], "", Source.UNKNOWN),
    ("shorter than base is no match", single(106, (10,)), [NEW_BASE], "", Source.UNKNOWN),
    (
        "declared unknown digest is still reported",
        single(107, (99,), {BASE_DIGEST_KEY: d(9)}),
        [NEW_BASE],
        d(9),
        Source.ANNOTATION,
    ),
    (
        "multi-arch by layers, per platform",
        index(108, {AMD: (40, (10, 13, 60)), ARM: (41, (20, 23, 61))}),
        [MULTI_BASE],
        d(3),
        Source.LAYERS,
    ),
    (
        "multi-arch platform digest annotated on index",
        index(109, {AMD: (42, (1,)), ARM: (43, (2,))}, {BASE_DIGEST_KEY: d(31)}),
        [MULTI_BASE],
        d(3),
        Source.ANNOTATION,
    ),
    (
        "multi-arch, one platform on another base",
        index(110, {AMD: (44, (10, 13, 60)), ARM: (45, (5, 6))}),
        [MULTI_BASE],
        "",
        Source.UNKNOWN,
    ),
]


@pytest.mark.parametrize(
    ("label", "app", "known", "expected", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_trace(
    label: str, app: ResolvedImage, known: list[BaseDigest], expected: str, source: Source
) -> None:
    lineage = trace(app, known)
    assert lineage.base_digest == expected, lineage.reason
    assert lineage.source == source


BUILT_ON = [
    ("on current base", single(200, (10, 12, 1)), NEW_BASE, "team/base", True, "current base"),
    (
        "on old base",
        single(201, (99,), {BASE_DIGEST_KEY: d(1)}),
        NEW_BASE,
        "team/base",
        False,
        "not the current",
    ),
    (
        "different base name",
        single(202, (99,), {BASE_DIGEST_KEY: d(2), BASE_NAME_KEY: "docker.io/library/alpine:3"}),
        NEW_BASE,
        "team/base",
        False,
        "different base image",
    ),
    (
        "same base name with tag",
        single(203, (99,), {BASE_DIGEST_KEY: d(2), BASE_NAME_KEY: "127.0.0.1:5000/team/base:3.12"}),
        NEW_BASE,
        "team/base",
        True,
        "current base",
    ),
    ("unknown lineage", single(204, (5,)), NEW_BASE, "team/base", False, "lineage unknown"),
]


@pytest.mark.parametrize(
    ("label", "app", "base", "repo", "verdict", "reason"), BUILT_ON, ids=[c[0] for c in BUILT_ON]
)
def test_built_on(
    label: str, app: ResolvedImage, base: BaseDigest, repo: str, verdict: bool, reason: str
) -> None:
    ok, why = built_on(trace(app, [base]), base, repo)
    assert ok is verdict
    assert reason in why


def test_rollout_record_restores_a_missing_lineage_entry() -> None:
    from imagedrift.core.history import RolloutRow, record_rollout, record_verdict

    done = RolloutRow("deployment/ns/web", "app", "r/app:1", "Complete", "done", "t0", "t1")
    restored = record_rollout(
        [], base_digest=d(2), app_digest=d(7), row=done, app="r/app", tag="1.0.1"
    )
    assert restored[0].app_digest == d(7) and restored[0].verdict == "Passed"
    assert restored[0].rollouts[0].result == "Complete"
    assert history.to_status(restored)[0]["rollouts"][0] == {
        "workload": "deployment/ns/web",
        "container": "app",
        "previousImage": "r/app:1",
        "result": "Complete",
        "reason": "done",
        "startedAt": "t0",
        "finishedAt": "t1",
    }
    # Without the app it stays as it was (nothing to name the entry by).
    bare = RolloutRow("w", "c", "", "Complete", "", "t0")
    assert record_rollout([], base_digest=d(2), app_digest=d(7), row=bare) == ()
    # An existing entry is updated in place, not duplicated.
    existing = record_verdict(
        [],
        base_digest=d(2),
        app="r/app",
        app_digest=d(7),
        tag="1.0.1",
        verdict="Passed",
        reasons=["lineage"],
        at="t0",
        limit=5,
    )
    again = record_rollout(existing, base_digest=d(2), app_digest=d(7), row=bare, app="r/app")
    assert len(again) == 1 and again[0].reasons == ("lineage",)
    # The status shape round-trips.
    assert history.from_status(history.to_status(again)) == again


# -- Copa: patched in place, never built on the new base -----------------------------------

COPA_KEY = "sh.copa.image.patched"


def _copa_app(where: str, at: str = "2026-06-02T10:00:00Z") -> ResolvedImage:
    marks = {"org.opencontainers.image.base.digest": "sha256:" + "0" * 64}
    annotations = {**marks, COPA_KEY: at} if where == "annotation" else dict(marks)
    labels = {COPA_KEY: at} if where == "label" else {}
    manifest = ImageManifest(
        "sha256:" + "d" * 64, "m", "c", ("l1", "l2", "copa"), annotations, labels
    )
    return ResolvedImage(ImageRef.parse("r.io/app:1.4.0-1"), manifest.digest, "m", (manifest,))


@pytest.mark.parametrize("where", ["annotation", "label"])
def test_copa_marks_are_read_from_annotations_and_labels(where: str) -> None:
    assert trace(_copa_app(where), []).patched_at == "2026-06-02T10:00:00Z"


@pytest.mark.parametrize(
    ("accept", "changed", "at", "ok", "says"),
    [
        (True, "2026-06-01T00:00:00Z", "2026-06-02T10:00:00Z", True, "accepted as remediated"),
        (False, "2026-06-01T00:00:00Z", "2026-06-02T10:00:00Z", False, "acceptPatched is off"),
        (True, "2026-06-03T00:00:00Z", "2026-06-02T10:00:00Z", False, "older than the current"),
        (True, None, "2026-06-02T10:00:00Z", False, "change time is unknown"),
        (True, "2026-06-01T00:00:00Z", "yesterday", False, "is not a time"),
    ],
)
def test_a_patched_image_counts_only_when_accepted_and_newer_than_the_base_change(
    accept: bool, changed: str | None, at: str, ok: bool, says: str
) -> None:
    lineage = trace(_copa_app("annotation", at), [])
    when = parse_timestamp(changed) if changed else None
    verdict, why = remediated_in_place(lineage, when, accept)
    assert verdict is ok and says in why
    assert "built on base digest sha256:000" in why, "it names the base it really sits on"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        # The newest entry on the current base is the candidate, whatever its verdict.
        (
            "sha256:b2",
            {
                "image": "r/app:1.0.2",
                "digest": "sha256:a2",
                "tag": "1.0.2",
                "verdict": "Rejected",
                "reasons": ["rollout: rolled back"],
            },
        ),
        (
            "sha256:b1",
            {
                "image": "r/app:1.0.1",
                "digest": "sha256:a1",
                "tag": "1.0.1",
                "verdict": "Passed",
                "reasons": [],
            },
        ),
        ("sha256:b3", {}),  # nothing chosen on this base yet
    ],
)
def test_the_candidate_is_read_back_from_the_lineage(base: str, expected: dict[str, Any]) -> None:
    lineage: history.Lineage = ()
    for base_digest, digest, tag, verdict, reasons in [
        ("sha256:b1", "sha256:a1", "1.0.1", "Passed", []),
        ("sha256:b2", "sha256:a3", "1.0.3", "Passed", []),
        ("sha256:b2", "sha256:a2", "1.0.2", "Rejected", ["rollout: rolled back"]),
    ]:
        lineage = history.record_verdict(
            lineage,
            base_digest=base_digest,
            app="r/app",
            app_digest=digest,
            tag=tag,
            verdict=verdict,
            reasons=reasons,
            at="2026-01-01T00:00:00Z",
            limit=10,
        )
    found = history.candidate_of(lineage, base)
    assert (found.to_status() if found else {}) == expected

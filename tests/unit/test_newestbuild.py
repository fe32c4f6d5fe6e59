"""Argo CD Image Updater's ``newest-build``, from its documentation
(argocd-image-updater.readthedocs.io, "Update strategies": "Update to the most recently
built image") and ``registry-scanner/pkg/tag/tag.go`` ``SortByDate``: ordered by the
config's ``created`` time, equal times by tag name (the greater newest), a tag without a
build time left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.images import ImageManifest, ResolvedImage
from imagedrift.core.newestbuild import NewestBuildPolicy, build_time
from imagedrift.core.refs import ImageRef
from imagedrift.errors import TagPolicyFailed

T0 = datetime(2024, 5, 30, 10, 0, tzinfo=UTC)


def policy(**times: datetime | None) -> NewestBuildPolicy:
    return NewestBuildPolicy().with_times(times)


def test_newest_build_first_and_ties_by_name() -> None:
    p = policy(f33bacd=T0, latest=T0, a1b2c3d=T0 + timedelta(hours=1), old=T0 - timedelta(days=1))
    # "a latest tag can beat f33bacd on the same image" (upstream's documented tie-break)
    assert p.ordered(["old", "f33bacd", "latest", "a1b2c3d"]) == [
        "a1b2c3d",
        "latest",
        "f33bacd",
        "old",
    ]


def test_a_tag_without_a_build_time_is_left_out_with_its_reason() -> None:
    p = policy(reproducible=None, built=T0)
    assert p.ordered(["reproducible", "built", "unread"]) == ["built"]
    assert p.skip_reason("reproducible") == "its image has no build time (created)"
    assert p.skip_reason("unread") == "its build time was not read"
    assert p.skip_reason("built") is None


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("new", "old", False),
        ("old", "new", True),
        ("new", "unknown", False),
        ("same", "new", False),
    ],
)
def test_is_downgrade(candidate: str, current: str, expected: bool) -> None:
    p = policy(new=T0, old=T0 - timedelta(days=1), same=T0, unknown=None)
    assert p.is_downgrade(candidate, current) is expected


def test_without_build_times_it_refuses_to_order() -> None:
    with pytest.raises(TagPolicyFailed, match="build times were not read"):
        NewestBuildPolicy().ordered(["a"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-30T10:00:00Z", T0),
        ("2024-05-30T10:00:00.123456789Z", T0 + timedelta(microseconds=123456)),  # Go's Nano
        ("2024-05-30T12:00:00+02:00", T0),
        ("", None),
        ("yesterday", None),
        ("2024-05-30T10:00:00", None),  # no zone: not RFC 3339
    ],
)
def test_created_times(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


def manifest(created: str) -> ImageManifest:
    return ImageManifest(
        "sha256:" + "a" * 64, "application/vnd.oci.image.manifest.v1+json", "", (), created=created
    )


def test_an_index_was_built_when_its_newest_image_was() -> None:
    image = ResolvedImage(
        ImageRef.parse("r.example/app:1"),
        "sha256:" + "b" * 64,
        "application/vnd.oci.image.index.v1+json",
        (manifest("2024-05-30T10:00:00Z"), manifest("2024-05-30T11:00:00Z"), manifest("")),
    )
    assert build_time(image) == T0 + timedelta(hours=1)

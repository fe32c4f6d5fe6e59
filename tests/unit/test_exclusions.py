"""Flux's ``exclusionList`` (ImageRepository ``spec.exclusionList``): tags matching any of
its regular expressions are dropped before a policy sees them; the default is
``["^.*\\\\.sig$"]``, so cosign signature tags are never candidates. Semantics from Flux's
image-reflector-controller documentation, "Exclusion list"
(https://fluxcd.io/flux/components/image/imagerepositories/#exclusion-list): the default
applies when the field is absent; patterns are Go regular expressions.
"""

from __future__ import annotations

import pytest

from imagedrift.core import exclusions
from imagedrift.core.spec import parse_policy
from imagedrift.core.tagpolicy import RegexPolicy
from imagedrift.errors import InvalidReference, InvalidSpec

SIG = "sha256-" + "a" * 64 + ".sig"
TAGS = ["1.0.0", "1.0.1", SIG, "sha256-" + "a" * 64 + ".att", "1.0.1.sig-not"]


def spec(**app: object) -> dict[str, object]:
    return {"base": {"image": "r.io/base", "tag": "1"}, "app": {**app}}


def test_the_default_drops_signature_tags_only() -> None:
    kept, dropped = exclusions.split(TAGS, exclusions.DEFAULT)
    assert dropped == [SIG]
    assert kept == ["1.0.0", "1.0.1", "sha256-" + "a" * 64 + ".att", "1.0.1.sig-not"]


def test_without_it_a_signature_would_be_the_newest_tag_of_an_alphabetical_policy() -> None:
    policy = RegexPolicy("^.*$", order="alphabetical", direction="asc")
    assert policy.ordered(TAGS)[0].startswith("sha256-")
    kept, _ = exclusions.split(TAGS, (r"^.*\.sig$", r"^sha256-.*\.att$"))
    assert policy.ordered(kept)[0] == "1.0.1.sig-not"


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ({}, exclusions.DEFAULT),  # absent: Flux's default
        ({"exclusionList": []}, ()),  # explicitly empty: nothing excluded
        ({"exclusionList": [r"^.*\.(sig|att|sbom)$"]}, (r"^.*\.(sig|att|sbom)$",)),
        ({"exclusionList": [r"^(?<pr>pr-\d+)$"]}, (r"^(?<pr>pr-\d+)$",)),  # Go named group
    ],
)
def test_the_policy_reads_the_list(app: dict[str, object], expected: tuple[str, ...]) -> None:
    assert parse_policy("p", spec(**app)).exclusions == expected


def test_a_pattern_that_does_not_compile_names_the_field_and_index() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.app\.exclusionList: \[1\] '\(unclosed'"):
        parse_policy("p", spec(exclusionList=["^ok$", "(unclosed"]))


def test_the_list_is_bounded() -> None:
    with pytest.raises(InvalidReference, match="at most 25"):
        exclusions.check(["x"] * 26)

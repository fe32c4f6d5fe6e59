"""Argo CD Image Updater's ``allowTags``/``ignoreTags``, from its documentation
(argocd-image-updater.readthedocs.io, "Configuring images for update": "Filtering tags")
and its code (``registry-scanner/pkg/image/options.go`` ``ParseMatch``, ``matchfunc.go``,
``version.go`` ``IsTagIgnored``): ``regexp:`` searches the tag (unanchored), ``any`` keeps
all, ignore globs are Go ``filepath.Match`` over the whole tag and ``*`` ignores all."""

from __future__ import annotations

import pytest

from imagedrift.core import tagmatch
from imagedrift.core.spec import parse_policy
from imagedrift.errors import InvalidReference, InvalidSpec


def kept(tags: list[str], allow: str = "", ignore: tuple[str, ...] = ()) -> list[str]:
    return tagmatch.split(tags, allow, ignore)[0]


@pytest.mark.parametrize(
    ("allow", "tags", "expected"),
    [
        ("", ["a", "b"], ["a", "b"]),
        ("any", ["a", "b"], ["a", "b"]),
        ("ANY", ["a", "b"], ["a", "b"]),  # case-insensitive, as ParseMatch lowers it
        ("regexp:^[0-9a-f]{7}$", ["f33bacd", "latest", "f33bacd1"], ["f33bacd"]),
        ("regexp:rc", ["1.0-rc1", "1.0", "rc"], ["1.0-rc1", "rc"]),  # a search, not a match
        ("Regexp:^v", ["v1", "1"], ["v1"]),
        ("regexp:^(?<major>1)\\.", ["1.2", "2.1"], ["1.2"]),  # Go named groups
    ],
)
def test_allow(allow: str, tags: list[str], expected: list[str]) -> None:
    assert kept(tags, allow) == expected


@pytest.mark.parametrize(
    ("ignore", "tags", "expected"),
    [
        (("*",), ["a", "1.0", ""], []),  # the documented way to pause updates
        (("latest",), ["latest", "latest2", "1"], ["latest2", "1"]),  # the whole tag
        (("*-rc*",), ["1.0-rc1", "1.0", "rc"], ["1.0", "rc"]),
        (("1.?",), ["1.0", "1.10", "1."], ["1.10", "1."]),
        (("[0-9]*",), ["1.0", "v1"], ["v1"]),
        (("[^v]*",), ["1.0", "v1"], ["v1"]),
        (("\\*",), ["*", "a"], ["a"]),
        (("a", "b"), ["a", "b", "c"], ["c"]),
    ],
)
def test_ignore(ignore: tuple[str, ...], tags: list[str], expected: list[str]) -> None:
    assert kept(tags, "", ignore) == expected


def test_ignored_before_allowed_and_each_drop_says_why() -> None:
    tags, dropped = tagmatch.split(["1.0", "1.0-rc1", "v2"], "regexp:^[0-9]", ("*-rc*",))
    assert tags == ["1.0"]
    assert dropped == [
        ("1.0-rc1", True, "matches ignoreTags '*-rc*'"),
        ("v2", False, "not matched by allowTags 'regexp:^[0-9]'"),
    ]


@pytest.mark.parametrize(
    ("allow", "message"),
    [
        ("latest", "is not a tag matcher: write regexp:<expression> or any"),
        ("glob:*", "is not a tag matcher"),
        ("regexp:(unclosed", "does not compile"),
    ],
)
def test_an_allow_matcher_that_does_not_parse_is_refused(allow: str, message: str) -> None:
    # Deliberate difference: upstream matches nothing; a refused spec says why.
    with pytest.raises(InvalidReference, match=message):
        tagmatch.check_allow(allow)


@pytest.mark.parametrize(
    ("glob", "message"),
    [
        ("[", "a \\[ is never closed"),
        ("[]", "a bare ']'"),
        ("a\\", "ends in a lone"),
        ("[z-a]", "range z-a is backwards"),
    ],
)
def test_a_glob_that_does_not_parse_is_refused(glob: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        tagmatch.check_ignore([glob])


def spec(**app: object) -> dict[str, object]:
    return {"base": {"image": "r.example/base", "tag": "1"}, "app": app}


def test_the_policy_reads_them() -> None:
    policy = parse_policy(
        "p",
        spec(tags={"semver": {"range": "*"}}, allowTags="regexp:^1", ignoreTags=["*-rc*"]),
    )
    assert (policy.allow_tags, policy.ignore_tags) == ("regexp:^1", ("*-rc*",))


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ({"tags": {"semver": {"range": "*"}}, "allowTags": "nope"}, "spec.app.allowTags"),
        ({"tags": {"semver": {"range": "*"}}, "ignoreTags": ["["]}, "spec.app.ignoreTags: \\[0\\]"),
        ({"tags": {"semver": {"range": "*"}}, "ignoreTags": "x"}, "must be a list"),
        ({"allowTags": "any"}, "sameTag follows the running tag only"),
        ({"tags": {"newestBuild": {}}, "patches": "incremental"}, "newestBuild already orders"),
    ],
)
def test_bad_matchers_name_the_field(app: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_policy("p", spec(**app))

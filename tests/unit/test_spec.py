"""What the operator refuses even when admission let it through."""

from __future__ import annotations

from typing import Any

import pytest

from imagedrift.core.durations import parse_duration
from imagedrift.core.spec import parse_policy
from imagedrift.errors import InvalidSpec


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1m30s", 90), ("500ms", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "1d", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidSpec):
        parse_duration(text)


BASE = {"image": "127.0.0.1:5000/base"}


@pytest.mark.parametrize(
    ("label", "spec", "message"),
    [
        (
            "tag and range",
            {"base": {**BASE, "tag": "1", "semverRange": ">=1"}},
            "exactly one of tag or semverRange",
        ),
        ("neither", {"base": BASE}, "exactly one of tag or semverRange"),
        ("tag in image", {"base": {"image": "r/base:1", "tag": "1"}}, "repository only"),
        (
            "interval too short",
            {"base": {**BASE, "tag": "1", "interval": "500ms"}},
            "outside 1s..24h",
        ),
        ("interval too long", {"base": {**BASE, "tag": "1", "interval": "25h"}}, "outside 1s..24h"),
        ("bad base range", {"base": {**BASE, "semverRange": ">=1.x.y.z"}}, "spec.base.semverRange"),
        (
            "bad app regex",
            {"base": {**BASE, "tag": "1"}, "app": {"tags": {"regex": {"pattern": "(unclosed"}}}},
            "spec.app.tags",
        ),
        (
            "two tag policies",
            {
                "base": {**BASE, "tag": "1"},
                "app": {"tags": {"sameTag": {}, "semver": {"range": "*"}}},
            },
            "exactly one",
        ),
        ("bad image", {"base": {"image": "UPPER/case", "tag": "1"}}, "spec.base.image"),
        (
            "a settling window no rollout could finish in time",
            {"base": {**BASE, "tag": "1"}, "rollout": {"settleTime": "5m", "verifyTimeout": "5m"}},
            "must be shorter than spec.rollout.verifyTimeout",
        ),
    ],
)
def test_invalid(label: str, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace(".", r"\.")):
        parse_policy("p", spec)


def test_defaults() -> None:
    policy = parse_policy("p", {"base": {**BASE, "tag": "3.12-slim"}})
    assert policy.base.interval == 300
    assert dict(policy.tags) == {"sameTag": {}}
    assert policy.rollout.selector.matches({"imagedrift.io/policy": "p"})
    assert policy.base.key == parse_policy("q", {"base": {**BASE, "tag": "3.12-slim"}}).base.key


@pytest.mark.parametrize(
    ("label", "base", "app", "plain", "tls"),
    [
        ("secure by default", {}, {}, [], ["127.0.0.1:5000", "ghcr.io"]),
        (
            "insecure names the base's host only",
            {"insecure": True},
            {},
            ["127.0.0.1:5000"],
            ["ghcr.io", "127.0.0.1:5001", "127.0.0.1"],
        ),
        (
            "app registries are named one by one",
            {},
            {"insecureRegistries": ["127.0.0.1:5001", "registry.lan"]},
            ["127.0.0.1:5001", "registry.lan"],
            ["127.0.0.1:5000", "registry.lan:443", "ghcr.io"],
        ),
    ],
)
def test_plain_http_only_for_the_hosts_a_policy_names(
    label: str, base: dict[str, Any], app: dict[str, Any], plain: list[str], tls: list[str]
) -> None:
    policy = parse_policy("p", {"base": {**BASE, "tag": "1", **base}, "app": app})
    assert [h for h in plain if policy.base.plain_http(h)] == plain, label
    assert [h for h in tls if policy.base.plain_http(h)] == [], label


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("127.0.0.1:5001", "spec.app.insecureRegistries: must be a list"),
        (["http://127.0.0.1:5001"], r"insecureRegistries\[0\]: 'http://127.0.0.1:5001' is not"),
        (["ok.lan", "reg.lan/path"], r"insecureRegistries\[1\]: 'reg.lan/path' is not"),
    ],
)
def test_insecure_registries_must_be_hosts(hosts: object, message: str) -> None:
    spec = {"base": {**BASE, "tag": "1"}, "app": {"insecureRegistries": hosts}}
    with pytest.raises(InvalidSpec, match=message):
        parse_policy("p", spec)

"""Admission keeps the README's word: every range, regular expression and calver layout a
policy can carry is checked by the API server (the CRD's CEL rules, Kubernetes' own CEL and
Go's own ``regexp``), with the field named, and the API server and the operator agree on
what is refused (issue #23).

Each family is checked on its named examples and on generated specs: for a few hundred
ranges and layouts the server-side dry run admits exactly what the operator can use.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from imagedrift.core.calver import Layout
from imagedrift.core.spec import parse_policy
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.core.tagpolicy import VersionRange
from imagedrift.errors import InvalidReference
from tests.harness.admission import admit_policy, policy_refusal
from tests.harness.controlplane import Kube


def _words(text: str) -> list[str]:
    return text.split()


BASE = {"image": "127.0.0.1:5000/admission/base", "tag": "1", "interval": "2s", "insecure": True}


def _spec(app: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"base": base or BASE, "app": app}


def _admitted(kube: Kube, spec: dict[str, Any]) -> bool:
    try:
        admit_policy(kube, "admission", spec)
    except ApiException as exc:
        status = json.loads(exc.body or "{}")
        assert (exc.status, status.get("reason")) == (422, "Invalid"), exc.body
        return False
    return True


# --- calver layouts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("nonsense", "calver.layout must contain a year field"),
        ("vYYYY-0M-D", "outside of a token"),
        ("v1YYYY-0M-0D", "outside of a token"),
        ("vYYYY-YY", "defines the same field twice"),
        ("vYYYY-0W-0M", "must not combine a week field"),
        ("vYYYY-0D", "contains a day but no month"),
        ("vYYYY.MINOR.0M", "splits the date"),
        ("vYYYY.MICRO.MINOR", "out of order"),
        ("vMODIFIER-YYYY", "MODIFIER matches the remainder"),
        ("vYYYYMM0D", "variable width token directly before another field"),
        ("YYYY/0M", "spec.app.tags.calver.layout"),
    ],
)
def test_a_calver_layout_the_operator_cannot_use_is_refused(
    kube: Kube, crds_installed: None, layout: str, message: str
) -> None:
    refusal = policy_refusal(kube, "admission", _spec({"tags": {"calver": {"layout": layout}}}))
    assert "spec.app.tags.calver.layout" in refusal and message in refusal, refusal
    with pytest.raises(InvalidReference):
        Layout.parse(layout)


@pytest.mark.parametrize(
    "layout", ["vDD-MM-YYYY", "vDD-MM-YY", "vYYYY.0W", "YYYY0M0D", "MAJOR.YY.0M"]
)
def test_day_first_and_other_upstream_layouts_are_admitted(
    kube: Kube, crds_installed: None, layout: str
) -> None:
    assert _admitted(kube, _spec({"tags": {"calver": {"layout": layout}}}))


LAYOUT_TOKENS = _words("YYYY YY 0Y MM 0M WW 0W DD 0D MAJOR MINOR MICRO MODIFIER")
LAYOUT_JUNK = _words("v release alpine M Y D W 1 0 YYY MMM")
SEPARATORS = _words(". - _")


def _layouts(seed: int, count: int) -> list[str]:
    """Layouts mostly shaped like real ones (tokens and separators), some not."""
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        parts = ["v"] if rng.random() < 0.3 else []
        for i in range(rng.randint(1, 5)):
            if i and rng.random() < 0.8:
                parts.append(rng.choice(SEPARATORS))
            pool = LAYOUT_TOKENS if rng.random() < 0.85 else LAYOUT_JUNK
            if i == 0 and rng.random() < 0.6:
                pool = ["YYYY", "YY", "0Y"]
            parts.append(rng.choice(pool))
        found.append("".join(parts))
    return found


def test_the_api_server_admits_exactly_the_layouts_the_operator_reads(
    kube: Kube, crds_installed: None
) -> None:
    disagreements = []
    usable_seen = 0
    for layout in _layouts(23, 250):
        try:
            Layout.parse(layout)
            usable = True
        except InvalidReference:
            usable = False
        usable_seen += usable
        if _admitted(kube, _spec({"tags": {"calver": {"layout": layout}}})) != usable:
            disagreements.append(f"{layout!r}: operator {'reads' if usable else 'refuses'} it")
    assert usable_seen > 20, usable_seen  # the generator reaches both sides
    assert not disagreements, disagreements


# --- regular expressions -------------------------------------------------------------------


def _regex_fields(pattern: str) -> dict[str, dict[str, Any]]:
    """Every field that takes a Go regular expression, holding ``pattern``."""
    return {
        "spec.app.exclusionList[0]": {"tags": {"calver": {}}, "exclusionList": [pattern]},
        "spec.app.allowTags": {"tags": {"calver": {}}, "allowTags": "regexp:" + pattern},
        "spec.app.tags.regex.pattern": {
            "tags": {"regex": {"pattern": pattern, "order": "alphabetical"}}
        },
        "spec.app.tags.semver.pattern": {"tags": {"semver": {"range": "*", "pattern": pattern}}},
    }


@pytest.mark.parametrize("pattern", ["[=", "(?=x)", "(?<!a)b", r"\C", r"\p{Old_Italic}", "a**"])
def test_a_regex_go_refuses_is_refused_in_every_field(
    kube: Kube, crds_installed: None, pattern: str
) -> None:
    for field, app in _regex_fields(pattern).items():
        refusal = policy_refusal(kube, "admission", _spec(app))
        assert field in refusal and "regular expression" in refusal, (field, refusal)


@pytest.mark.parametrize(
    "pattern", [r"^[[:^digit:]]+$", r"^\pN+$", r"\p{Greek}", r"^a(?i)b", r"^\Q1.2\E$", r"\p{greek}"]
)
def test_valid_go_regex_is_admitted_in_every_field_and_read_by_the_operator(
    kube: Kube, crds_installed: None, pattern: str
) -> None:
    for field, app in _regex_fields(pattern).items():
        spec = _spec(app)
        assert _admitted(kube, spec), field
        parse_policy("admission", spec)  # and the operator takes it: no Stalled policy


# --- version ranges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version_range",
    ["1x", ">=1.2 <2 3x", "1.2.3-01", "18446744073709551616", "1.2 - ", ">=1.2,", "1 2 - 3", "=>"],
)
def test_a_range_the_operator_cannot_parse_is_refused_with_the_field(
    kube: Kube, crds_installed: None, version_range: str
) -> None:
    with pytest.raises(InvalidReference):
        VersionRange.parse(version_range)
    refusal = policy_refusal(
        kube, "admission", _spec({"tags": {"semver": {"range": version_range}}})
    )
    assert "spec.app.tags.semver.range" in refusal, refusal
    base = {**{k: v for k, v in BASE.items() if k != "tag"}, "semverRange": version_range}
    refusal = policy_refusal(kube, "admission", _spec({}, base))
    assert "spec.base.semverRange" in refusal, refusal


RANGE_PIECES = [
    *[
        "1",
        "2",
        "0",
        "01",
        "10",
        "1.2",
        "1.2.3",
        "v1.2.3",
        "1.2.3-rc.1",
        "1.2.3-01",
        "1.2.3+b.1",
        "x",
        "X",
        "*",
        "1.x",
        "1.2.x",
    ],
    *[
        "x.1|2",
        "1x",
        "18446744073709551615",
        "18446744073709551616",
        "1.2.3-0",
        "1.2-a",
        "*.x.*",
        "1.*.5",
    ],
    *[
        "v",
        ".",
        "-",
        "|",
        "||",
        ",",
        ">",
        ">=",
        "=>",
        "<",
        "<=",
        "=<",
        "=",
        "!=",
        "~",
        "~>",
        "^",
        "a",
        "1.2.3.4",
        ">=1.2.0",
        "^1.2",
        "~1.2.3",
    ],
    " ",
    "  ",
    "\t",
    " - ",
    " || ",
    ", ",
]


def test_the_api_server_admits_exactly_the_ranges_the_operator_parses(
    kube: Kube, crds_installed: None
) -> None:
    rng = random.Random(23)
    disagreements = []
    parsed_seen = 0
    for _ in range(300):
        text = "".join(rng.choice(RANGE_PIECES) for _ in range(rng.randint(1, 6)))
        if not text.strip():
            continue
        try:
            policy_from_spec({"semver": {"range": text}})
            parses = True
        except InvalidReference:
            parses = False
        parsed_seen += parses
        if _admitted(kube, _spec({"tags": {"semver": {"range": text}}})) != parses:
            disagreements.append(f"{text!r}: operator {'parses' if parses else 'refuses'} it")
    assert parsed_seen > 30, parsed_seen
    assert not disagreements, disagreements

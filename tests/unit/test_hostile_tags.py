"""A registry's tag list is untrusted input: whatever it holds, no tag policy raises, and a
name the OCI grammar does not allow is never a candidate, let alone the first.

The hostile names are the ones a broken or malicious registry can send: overlong (a version
past semver's 255 characters once made every search of the repository raise), non-ASCII
digits that ``str.isdigit`` accepts, control characters, empty strings, values that are not
strings at all, and lists of 10^5 entries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagedrift.core.newestbuild import NewestBuildPolicy
from imagedrift.core.spec import parse_policy
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.core.tagpolicy import parse_version
from imagedrift.core.tagselect import MAX_NOT_A_TAG_NOTES, NOT_A_TAG, select, well_formed

PROPERTY = settings(deadline=None, max_examples=150)

# Every kind a user can name, with the options that change how tags are read.
KINDS: list[dict[str, Any]] = [
    {"semver": {"range": ">=0.0.0-0"}},
    {"semver": {"range": "*", "strict": True}},
    {"semver": {"range": "*", "pattern": "^(?P<v>.*)-alpine$", "extract": "$v"}},
    {"regex": {"pattern": "^main-(?P<n>[0-9]+)$", "extract": "$n", "order": "numerical"}},
    {"regex": {"pattern": "^(?P<v>.*)$", "extract": "$v", "order": "alphabetical"}},
    {"calver": {}},
    {"calver": {"layout": "YY.MINOR.MICRO"}},
    {"sameTag": {"tag": "1.2.3"}},
    {"keel": {"level": "all"}},
    {"keel": {"level": "minor", "matchPreRelease": True}},
    {"force": {}},
    {"newestBuild": {}},
]
IDS = [next(iter(k)) + str(i) for i, k in enumerate(KINDS)]

# Readable by at least one kind each; the running tag is the first.
VALID = ["1.2.3", "1.3.0", "2.0.0-alpine", "main-7", "2024.05.01", "24.1.2", "v2.1.0"]

# Names that look like the newest version to a careless parser.
OVERLONG = [
    "9.9.9-" + "a" * 300,
    "9" * 400,
    "99999.0.0+" + "b" * 200,
    "main-" + "9" * 200,
    "2099." + "1" * 200,
]
# Fullwidth and Arabic-Indic digits, which str.isdigit and int() accept.
NON_ASCII = [
    "\uff19.\uff19.\uff19",
    "9.9.9-\u00e9",
    "v9.9.9\u200b",
    "main-\u0669\u0669",
    "\uff12\uff10\uff19\uff19.01.01",
]
CONTROL = ["9.9.9\n", "9.9.9\x00", "\x1b[2J9.9.9", "9.9.9\t", "main-9\r"]
ODD: list[Any] = ["", ".9.9.9", "-9.9.9", 99, None, ["9.9.9"], {"tag": "9.9.9"}]
HOSTILE: list[Any] = [*OVERLONG, *NON_ASCII, *CONTROL, *ODD]

BUILT = datetime(2024, 1, 1, tzinfo=UTC)


def spec(kind: dict[str, Any]) -> Any:
    return parse_policy(
        "p",
        {
            "base": {"image": "r.example/base", "tag": "1"},
            "app": {"tags": kind, "maxCandidates": 100},
        },
    )


def policy_for(kind: dict[str, Any], tags: list[Any]) -> Any:
    policy = policy_from_spec(kind)
    if isinstance(policy, NewestBuildPolicy):
        # Every name, hostile ones too, gets the newest build time: only the grammar
        # keeps a hostile name from being first.
        late = BUILT + timedelta(days=365)
        times = {t: BUILT if t in VALID else late for t in tags if isinstance(t, str)}
        policy = policy.with_times(times)
    return policy


def candidates(kind: dict[str, Any], tags: list[Any]) -> tuple[str, ...]:
    selection = select(tags, VALID[0], policy_for(kind, tags), spec(kind))
    return selection.candidates


# The grammar written out again, so the oracle does not share the code under test.
GRAMMAR = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)


def is_hostile(tag: object) -> bool:
    return not (isinstance(tag, str) and GRAMMAR.fullmatch(tag))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_no_policy_takes_a_hostile_name(kind: dict[str, Any]) -> None:
    found = candidates(kind, [*VALID, *HOSTILE])
    assert not [t for t in found if is_hostile(t)], found


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_hostile_names_do_not_change_what_is_chosen(kind: dict[str, Any]) -> None:
    assert candidates(kind, [*HOSTILE, *VALID, *HOSTILE]) == candidates(kind, VALID)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_hundred_thousand_names(kind: dict[str, Any]) -> None:
    listed: list[Any] = [HOSTILE[i % len(HOSTILE)] for i in range(100_000 - len(VALID))]
    listed[50_000:50_000] = VALID
    assert len(listed) == 100_000
    assert candidates(kind, listed) == candidates(kind, VALID)


@PROPERTY
@given(
    st.lists(
        st.one_of(
            st.sampled_from(VALID),
            st.sampled_from(HOSTILE),
            st.text(min_size=0, max_size=300),
            st.text(alphabet="0123456789.-+abv", min_size=129, max_size=400),
        ),
        max_size=40,
    ),
    st.sampled_from(KINDS),
)
def test_any_list_any_kind(tags: list[Any], kind: dict[str, Any]) -> None:
    found = candidates(kind, tags)
    assert not [t for t in found if is_hostile(t)], found


def test_malformed_names_are_noted_escaped_and_bounded() -> None:
    kept, notes = well_formed(["1.0.0", "\x1b[2J", "9.9.9-" + "a" * 300, 7])
    assert kept == ["1.0.0"]
    assert [n.fate for n in notes] == [NOT_A_TAG] * 3
    assert notes[0].tag == "\\x1b[2J"
    assert notes[1].tag.endswith("... (306 chars)") and len(notes[1].tag) < 60
    assert notes[2].tag == "<int>"
    _, many = well_formed(["\n"] * 1000)
    assert len(many) == MAX_NOT_A_TAG_NOTES + 1
    assert many[-1].tag == f"({1000 - MAX_NOT_A_TAG_NOTES} more)"


def test_plan_names_why_a_hostile_name_was_dropped() -> None:
    kind = {"semver": {"range": "*"}}
    selection = select(["1.2.3", "9" * 400], "1.2.3", policy_for(kind, []), spec(kind))
    assert selection.of(NOT_A_TAG) == ["9" * 40 + "... (400 chars)"]


@pytest.mark.parametrize("text", ["9.9.9-" + "a" * 300, "1." + "9" * 300, "1.2.3+" + "b" * 260])
def test_a_version_the_library_refuses_is_not_a_version(text: str) -> None:
    assert parse_version(text) is None

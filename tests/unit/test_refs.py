"""Image references: table tests and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagedrift.core.refs import ImageRef, is_digest, is_tag, short_digest
from imagedrift.errors import InvalidReference

D = "sha256:" + "a" * 64

CASES = [
    ("python:3.12-slim", ImageRef("docker.io", "library/python", "3.12-slim")),
    ("python", ImageRef("docker.io", "library/python")),
    ("bitnami/redis:7", ImageRef("docker.io", "bitnami/redis", "7")),
    ("myacr.azurecr.io/base/python:3.12", ImageRef("myacr.azurecr.io", "base/python", "3.12")),
    ("127.0.0.1:5000/team/app:1.0.0", ImageRef("127.0.0.1:5000", "team/app", "1.0.0")),
    ("localhost/app", ImageRef("localhost", "app")),
    (f"ghcr.io/o/app@{D}", ImageRef("ghcr.io", "o/app", "", D)),
    (f"ghcr.io/o/app:1@{D}", ImageRef("ghcr.io", "o/app", "1", D)),
    ("registry:5000/app", ImageRef("registry:5000", "app")),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parse(text: str, expected: ImageRef) -> None:
    assert ImageRef.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "UPPER/app",
        "app:",
        "app@sha256:short",
        "app:bad tag",
        "a//b",
        "app:-x",
        # A newline inside is refused ("$" alone would let one through before the end).
        "app\n:1.0",
        "app:1.0\n:2",
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference):
        ImageRef.parse(text)


def test_pinning_drops_the_tag_and_reference_prefers_digest() -> None:
    ref = ImageRef.parse("r.io/app:1")
    assert str(ref.with_digest(D)) == f"r.io/app@{D}"
    assert ref.reference == "1" and ref.with_digest(D).reference == D
    assert ImageRef.parse("r.io/app").reference == "latest"
    assert short_digest(D) == "sha256:aaaaaaaaaaaa" and short_digest("") == ""


component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
hosts = st.sampled_from(["r.example.io", "127.0.0.1:5000", "localhost", "myacr.azurecr.io"])
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)


@given(
    hosts,
    st.lists(component, min_size=1, max_size=3),
    st.one_of(st.just(""), tags),
    st.one_of(st.just(""), digests),
)
def test_round_trip(host: str, parts: list[str], tag: str, digest: str) -> None:
    ref = ImageRef(host, "/".join(parts), tag, digest)
    assert ImageRef.parse(str(ref)) == ref


@given(st.text(max_size=60))
def test_anything_parses_to_a_stable_ref_or_is_refused(text: str) -> None:
    try:
        ref = ImageRef.parse(text)
    except InvalidReference as exc:
        assert str(exc)  # refused with a message
    else:
        assert ImageRef.parse(str(ref)) == ref


@pytest.mark.parametrize("text", ["1.0\n", "1.0\r", "\n", "a" * 129, "é"])
def test_a_tag_is_exactly_the_grammar(text: str) -> None:
    assert not is_tag(text)


def test_a_digest_is_exactly_the_grammar() -> None:
    assert is_digest(D)
    assert not is_digest(D + "\n")

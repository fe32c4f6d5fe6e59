"""The operator reads every regex field exactly as Go does: Go's own ``regexp`` (a small Go
program built with the control plane's toolchain, ``tests/oracle/goregexp``) and the
operator's RE2 layer are asked the same few thousand generated questions, and agree on each.

A question is a pattern (drawn from RE2's syntax and from what Go and RE2 are known to
read differently: ``\\C``, Unicode class names, capture names, POSIX classes, flags,
look-arounds, bad repeats, unbalanced brackets) with six tags in the OCI tag alphabet and an
``extract`` template. Agreement means: the same accept/refuse; the same capture names; per
tag, the same match/no-match and the same text in every group (``FindStringSubmatch``); and
the same ``Expand``. The fields the operator reads (``regex.pattern``, ``semver.pattern``,
``allowTags``, ``exclusionList``) are each checked to accept and match as Go does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagedrift.core import exclusions, tagmatch
from imagedrift.core.goregex import RegexError, Regexp, compile_go, expand_template
from imagedrift.core.tagpolicy import RegexPolicy
from imagedrift.errors import InvalidReference
from tests.harness import goregexp
from tests.harness.goregexp import Answer, Question

SEED = 23
CASES = 4000


def _words(text: str) -> list[str]:
    return text.split()


ATOMS = [
    *"abcxvAZ012.-_",
    r"\p{ Greek}",
    *_words(r"\. \d \D \w \W \s \S \b \B \A \z \Z \- \_ \y \G \K \e \a \f \t \n \v \0 \8 \1"),
    *_words(r"\x41 \x{61} \x{110000} \101 \u0061 \N{DIGIT} \C \\C \Q.*\E \Qa.b \Q\C\E"),
    *_words(r"\pN \pL \pl \PL \pZ \pC \p{Greek} \p{greek} \p{Latin} \p{-Lu-} \p{^Greek}"),
    *_words(r"\P{^Greek} \P{Greek} \p{Foo} \pX \p{Any} \p{any} \PAny \p{Cn} \P{Cn} \p{LC} \p{Lc}"),
    *_words(r"\P{Lc} \p{Cased_Letter} \p{ascii} \P{ASCII} \p{Assigned} \p{Digit} \p{punct}"),
    *_words(r"\p{Old_Italic} \p{Nag_Mundari} \p{SignWriting} \p{Kawi} \p{Zzzz} \p{} \p{^} \p"),
    *_words(". ^ $ [abc] [^a-c] [a-] []a] [^]a] [z-a] [] [^] [a-\\d] [\\d-z] [[:word:]]"),
    *_words("[[:digit:]] [[:^digit:]] [[:foo:]] [[:alpha:][:digit:]] [[=a=]] [[.a.]] [[:]a:]]"),
    *_words(r"[\d.] [\p{Greek}] [\pN-] [\P{Lc}x] [!-\p{Lc}] [\p{Lc}-z] [\P{Ascii}] [\Q]\E] [\C]"),
    *_words("(?i) (?s) (?U) (?m) (?-i) (?x) (?i-s) (?) (?-) (?i-) \u00e9 \u03b1"),
]
OPENERS = [
    *_words("( (?: (?P<n> (?<n> (?P<m> (?P<1n> (?P<\u00e9> (?P<> (?i: (?i-s: (?U:"),
    *_words("(?= (?! (?<= (?<! (?#c (?P=n (?> (?| (?'n' (?P<n"),
]
QUANTIFIERS = [
    *_words("* + ? *? +? ?? {2} {1,3} {2,} {,2} {3,1} {1001} {1000} ** *+ ++ {1}{2} {0} {01}"),
    *_words("{2}? { {1000}{2}"),
]
BROKEN = ["(", ")", "[", "]", "{", "}", "\\", "|", "||"]
TAG_ALPHABET = "abcxvAZ0123456789._-"
TEMPLATES = ["", "$0", "$1", "${1}", "$2", "$n", "${n}x", "$m-$n", "$1x", "$$1", "$", "$01"]


def _pattern(rng: random.Random, depth: int = 0) -> str:
    out: list[str] = []
    for _ in range(rng.randint(0, 5)):
        roll = rng.random()
        if roll < 0.55:
            out.append(rng.choice(ATOMS))
        elif roll < 0.75 and depth < 3:
            out.append(rng.choice(OPENERS) + _pattern(rng, depth + 1) + ")")
        elif roll < 0.85:
            out.append("|")
        elif roll < 0.95 and out:
            out.append(rng.choice(QUANTIFIERS))
        else:
            out.append(rng.choice(BROKEN))
    return "".join(out)


def _tag(rng: random.Random) -> str:
    return "".join(rng.choice(TAG_ALPHABET) for _ in range(rng.randint(0, 10)))


def generated(seed: int = SEED, count: int = CASES) -> Iterator[Question]:
    """``count`` questions, the same ones every run."""
    rng = random.Random(seed)
    for _ in range(count):
        tags = tuple(_tag(rng) for _ in range(6))
        yield Question(_pattern(rng), tags, rng.choice(TEMPLATES))


@pytest.fixture(scope="module")
def oracle() -> Path:
    return goregexp.build()


def _compiled(pattern: str) -> Regexp | str:
    try:
        return compile_go(pattern)
    except RegexError as exc:
        return str(exc)


def _disagreement(question: Question, go: Answer) -> str | None:
    """Why the operator's reading differs from Go's, or None when it does not."""
    ours = _compiled(question.pattern)
    if isinstance(ours, str) or not go.ok:
        if isinstance(ours, str) != (not go.ok):
            operator = ours if isinstance(ours, str) else "compiles"
            return f"Go: {go.error or 'compiles'}; operator: {operator}"
        return None
    if ours.names != go.names:
        return f"capture names: Go {go.names}, operator {ours.names}"
    for tag, indexes, expanded in zip(question.tags, go.matches, go.expanded, strict=True):
        match = ours.search(tag)
        if (match is None) != (indexes is None) or ours.matches(tag) != (indexes is not None):
            return f"{tag!r}: Go {'matches' if indexes else 'does not match'}"
        if match is None or indexes is None:
            continue
        groups = tuple(
            None if indexes[i] < 0 else tag[indexes[i] : indexes[i + 1]]
            for i in range(0, len(indexes), 2)
        )
        if match.groups != groups:
            return f"{tag!r}: groups Go {groups}, operator {match.groups}"
        if expand_template(question.template, match) != expanded:
            return f"{tag!r}: {question.template!r} expands to {expanded!r} in Go"
    return None


def _field_disagreement(question: Question, go: Answer) -> str | None:
    """The fields a policy carries, each read as Go reads the pattern."""
    pattern = question.pattern
    refusals = []
    for field, check in (
        ("exclusionList", lambda: exclusions.check([pattern])),
        ("allowTags", lambda: tagmatch.check_allow("regexp:" + pattern)),
        ("regex.pattern", lambda: RegexPolicy(pattern)),
    ):
        if field == "allowTags" and not pattern:
            continue  # "regexp:" alone is refused by both the CRD and the operator
        try:
            check()
        except InvalidReference:
            refusals.append(field)
        else:
            if not go.ok:
                return f"{field} accepts what Go refuses"
    if go.ok and refusals:
        return f"{', '.join(refusals)} refuse what Go accepts"
    if not go.ok:
        return None
    policy = RegexPolicy(pattern)
    _, excluded = exclusions.split(question.tags, (pattern,))
    for tag, indexes in zip(question.tags, go.matches, strict=True):
        matched = indexes is not None
        if (policy.extracted(tag) is not None) != matched or (tag in excluded) != matched:
            return f"{tag!r}: a field reads the match differently from Go"
    return None


def test_the_operator_reads_every_generated_pattern_as_go_does(oracle: Path) -> None:
    questions = list(generated())
    answers = goregexp.ask(oracle, questions)
    compiled = sum(a.ok for a in answers)
    matched = sum(m is not None for a in answers for m in a.matches)
    # The generator is meant to reach both sides of each question; if it stops doing so,
    # agreement would prove little.
    assert CASES * 0.3 < compiled < CASES * 0.7, compiled
    assert matched > CASES, matched
    disagreements = [
        f"{q.pattern!r}: {why}"
        for q, a in zip(questions, answers, strict=True)
        if (why := _disagreement(q, a) or _field_disagreement(q, a)) is not None
    ]
    assert not disagreements, "\n".join(disagreements[:30])


@pytest.mark.parametrize(
    ("pattern", "tag"),
    [
        (r"^v[[:^digit:]]+$", "vabc"),  # a negated POSIX class, not a set of literals
        (r"^\pN+$", "123"),
        (r"^\p{Greek}|^x", "x1"),
        (r"^a(?i)B$", "aB"),  # a flag group in the middle of a pattern
        (r"^a(?i)B$", "ab"),
        (r"^\Q1.2\E$", "1.2"),
        (r"^\Q1.2\E$", "112"),
        (r"(?=x)", "x"),  # a look-ahead: Go refuses it
        (r"\C", "x"),  # any byte: RE2 has it, Go does not
        (r"(?P<\u00e9>x)", "x"),  # Go's capture names are ASCII
        (r"\p{greek}", "x"),  # Go's loose Unicode class names
        (r"\p{Old_Italic}", "x"),
        (r"(a+)+$", "a" * 64 + "!"),  # backtracks forever in Python's re; linear in RE2
    ],
)
def test_the_issue_s_examples_agree_with_go(oracle: Path, pattern: str, tag: str) -> None:
    """Issue #23's examples, each asked of Go too."""
    (answer,) = goregexp.ask(oracle, [Question(pattern, (tag,))])
    assert _disagreement(Question(pattern, (tag,)), answer) is None
    assert _field_disagreement(Question(pattern, (tag,)), answer) is None

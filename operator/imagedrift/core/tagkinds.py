"""A tag policy from its spec: every kind a user can name in ``spec.app.tags``.

``semver``, ``regex`` and ``sameTag`` (``tagpolicy``), ``calver`` (``calver``),
``newestBuild`` (``newestbuild``), ``keel`` and ``force`` (``keel``). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from imagedrift.core.calver import DEFAULT_LAYOUT, CalverPolicy
from imagedrift.core.keel import ForcePolicy, KeelPolicy
from imagedrift.core.newestbuild import NewestBuildPolicy
from imagedrift.core.tagpolicy import RegexPolicy, SameTagPolicy, SemverPolicy, TagPolicy
from imagedrift.errors import InvalidReference

__all__ = ["KINDS", "policy_from_spec"]

_SPEC_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    # kind: (required fields, optional fields)
    "semver": (frozenset({"range"}), frozenset({"pattern", "extract", "strict"})),
    "regex": (frozenset({"pattern", "order"}), frozenset({"extract", "direction"})),
    "sameTag": (frozenset({"tag"}), frozenset()),
    "calver": (frozenset(), frozenset({"layout"})),
    "newestBuild": (frozenset(), frozenset()),
    "keel": (frozenset({"level"}), frozenset({"matchPreRelease"})),
    "force": (frozenset(), frozenset({"matchTag"})),
}


def _string_field(kind: str, body: Mapping[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise InvalidReference(f"{kind}.{name} must be a string, not {type(value).__name__}")
    return value


def _bool_field(kind: str, body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidReference(f"{kind}.{name} must be true or false, not {value!r}")
    return value


def policy_from_spec(spec: Mapping[str, Any]) -> TagPolicy:
    """Build a policy from its spec: exactly one of

    ``{"semver": {"range": ">=1.2 <2"}}``,
    ``{"regex": {"pattern": "^main-(?P<ts>[0-9]+)$", "extract": "$ts",
    "order": "numerical"|"alphabetical", "direction": "asc"|"desc"}}`` (``extract`` defaults
    to the whole tag, ``direction`` to ``asc``), ``{"sameTag": {"tag": "stable"}}``,
    ``{"calver": {"layout": "YYYY.0M.0D"}}``, ``{"newestBuild": {}}``,
    ``{"keel": {"level": "minor", "matchPreRelease": true}}`` or
    ``{"force": {"matchTag": false}}``.
    Raise InvalidReference saying what is missing, unknown or malformed.
    """
    if not isinstance(spec, Mapping):
        raise InvalidReference(f"tag policy must be a mapping, not {type(spec).__name__}")
    kinds = [key for key in spec if key in _SPEC_FIELDS]
    unknown = sorted(str(key) for key in spec if key not in _SPEC_FIELDS)
    if unknown:
        raise InvalidReference(
            f"tag policy has unknown field(s) {', '.join(unknown)}; "
            f"expected one of {', '.join(_SPEC_FIELDS)}"
        )
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else "none"
        raise InvalidReference(
            f"tag policy needs exactly one of {', '.join(_SPEC_FIELDS)}; found {found}"
        )
    kind = kinds[0]
    body = spec[kind]
    if not isinstance(body, Mapping):
        raise InvalidReference(f"{kind} must be a mapping, not {type(body).__name__}")
    required, optional = _SPEC_FIELDS[kind]
    present = {str(key) for key in body}
    missing = sorted(required - present)
    if missing:
        raise InvalidReference(f"{kind} is missing {', '.join(missing)}")
    extra = sorted(present - required - optional)
    if extra:
        allowed = ", ".join(sorted(required | optional))
        raise InvalidReference(
            f"{kind} has unknown field(s) {', '.join(extra)}; allowed: {allowed}"
        )
    if kind == "semver":
        return SemverPolicy(
            _string_field(kind, body, "range"),
            pattern=_string_field(kind, body, "pattern"),
            extract=_string_field(kind, body, "extract"),
            strict=_bool_field(kind, body, "strict", False),
        )
    if kind == "calver":
        return CalverPolicy(_string_field(kind, body, "layout", DEFAULT_LAYOUT))
    if kind == "newestBuild":
        return NewestBuildPolicy()
    if kind == "keel":
        return KeelPolicy(
            _string_field(kind, body, "level"), _bool_field(kind, body, "matchPreRelease", True)
        )
    if kind == "force":
        return ForcePolicy(_bool_field(kind, body, "matchTag", False))
    if kind == "regex":
        return RegexPolicy(
            pattern=_string_field(kind, body, "pattern"),
            extract=_string_field(kind, body, "extract"),
            order=_string_field(kind, body, "order"),
            direction=_string_field(kind, body, "direction", "asc"),
        )
    return SameTagPolicy(_string_field(kind, body, "tag"))


KINDS: Final = tuple(_SPEC_FIELDS)

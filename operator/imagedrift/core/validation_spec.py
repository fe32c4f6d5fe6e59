"""``spec.validation``: the gates a candidate must pass (signature, vulnerabilities, smoke test).

``parse_validation`` reads the dict into frozen values; a gate the schema let through but
the operator cannot run raises ``InvalidSpec`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imagedrift.core.durations import parse_duration
from imagedrift.errors import InvalidSpec

SEVERITIES = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")


@dataclass(frozen=True)
class IgnoredFinding:
    id: str
    expires: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class SignatureGate:
    type: str = "any"  # any | cosign | notation
    public_key: str = ""  # PEM; when set, signatures are verified, not just found


@dataclass(frozen=True)
class VulnerabilityGate:
    max_severity: str = "HIGH"
    max_report_age: float = 0.0  # seconds; 0: any age
    source: str = "any"  # any | referrer | cluster
    ignore: tuple[IgnoredFinding, ...] = ()


@dataclass(frozen=True)
class SmokeTestGate:
    template: Mapping[str, Any]  # a batch/v1 JobSpec (run in core.sandbox's sandbox)
    timeout: float = 300.0
    container: str = ""  # default: the first container


@dataclass(frozen=True)
class ValidationSpec:
    signature: SignatureGate | None = None
    vulnerabilities: VulnerabilityGate | None = None
    smoke_test: SmokeTestGate | None = None


def parse_validation(raw: Mapping[str, Any]) -> ValidationSpec:
    """Read ``spec.validation``: a gate is on when its key is present (even empty)."""
    signature = vulnerabilities = smoke = None
    if "signature" in raw:
        sig = raw.get("signature") or {}
        kind = str(sig.get("type") or "any")
        if kind not in ("any", "cosign", "notation"):
            raise InvalidSpec(
                f"spec.validation.signature.type: {kind!r} is not any|cosign|notation"
            )
        signature = SignatureGate(kind, str(sig.get("publicKey") or ""))
    if "vulnerabilities" in raw:
        vulnerabilities = _vulnerabilities(raw.get("vulnerabilities") or {})
    if "smokeTest" in raw:
        smoke = _smoke_test(raw.get("smokeTest") or {})
    return ValidationSpec(signature, vulnerabilities, smoke)


def _vulnerabilities(vul: Mapping[str, Any]) -> VulnerabilityGate:
    severity = str(vul.get("maxSeverity") or "HIGH").upper()
    if severity not in SEVERITIES:
        raise InvalidSpec(
            f"spec.validation.vulnerabilities.maxSeverity: {severity!r} is not one of "
            + ", ".join(SEVERITIES)
        )
    source = str(vul.get("source") or "any")
    if source not in ("any", "referrer", "cluster"):
        raise InvalidSpec(
            f"spec.validation.vulnerabilities.source: {source!r} is not any|referrer|cluster"
        )
    ignore = tuple(
        IgnoredFinding(
            str(item["id"]),
            _timestamp(str(item["expires"]), f"spec.validation.vulnerabilities.ignore[{i}].expires")
            if item.get("expires")
            else None,
            str(item.get("reason") or ""),
        )
        for i, item in enumerate(vul.get("ignore") or ())
    )
    return VulnerabilityGate(
        severity,
        parse_duration(str(vul["maxReportAge"])) if vul.get("maxReportAge") else 0.0,
        source,
        ignore,
    )


def _smoke_test(smoke_raw: Mapping[str, Any]) -> SmokeTestGate:
    template = smoke_raw.get("template")
    containers = (((template or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    if not isinstance(template, Mapping) or not containers:
        raise InvalidSpec(
            "spec.validation.smokeTest.template: a JobSpec with template.spec.containers"
        )
    if smoke_raw.get("namespace"):
        raise InvalidSpec(
            "spec.validation.smokeTest.namespace: smoke tests run in the operator's "
            "sandbox namespace; remove it"
        )
    from imagedrift.core.sandbox import refusals  # local: a gate detail

    refused = refusals(template)
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise InvalidSpec(refused[0] + more)
    wanted = str(smoke_raw.get("container") or "")
    if wanted and wanted not in {c.get("name") for c in containers}:
        raise InvalidSpec(
            f"spec.validation.smokeTest.container: no container {wanted!r} in the template"
        )
    return SmokeTestGate(
        dict(template), parse_duration(str(smoke_raw.get("timeout") or "5m")), wanted
    )


def _timestamp(text: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSpec(f"{where}: {text!r} is not an RFC 3339 date-time") from None
    if when.tzinfo is None:
        raise InvalidSpec(f"{where}: {text!r} has no time zone offset")
    return when

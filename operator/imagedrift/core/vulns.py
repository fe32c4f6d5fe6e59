"""Vulnerability reports as findings, and whether a report lets a candidate through.

Three report shapes are read: Trivy's JSON (``trivy image -f json``), SARIF 2.1.0 (Trivy's
``-f sarif`` and other scanners), and the Trivy Operator's ``VulnerabilityReport``
resource. All become ``Report``; ``assess`` decides. Severities rank
NONE < UNKNOWN < LOW < MEDIUM < HIGH < CRITICAL: a finding whose scanner could not grade it
ranks like LOW, as Trivy orders it, so ``maxSeverity: NONE`` still refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imagedrift.core.spec import IgnoredFinding

RANK = {"NONE": 0, "UNKNOWN": 1, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}


@dataclass(frozen=True)
class Finding:
    id: str  # CVE-2024-1234, GHSA-..., or a SARIF ruleId
    severity: str  # one of RANK's keys
    package: str = ""


@dataclass(frozen=True)
class Report:
    source: str  # what it is and where it came from, for reasons
    findings: tuple[Finding, ...]
    created: datetime | None = None  # when the scan ran, when known
    digest: str = ""  # the image digest the report names, when it names one


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        # Trivy writes nanoseconds; fromisoformat takes at most microseconds.
        head, dot, frac = text.replace("Z", "+00:00").partition(".")
        if dot:
            digits = frac[: len(frac) - len(frac.lstrip("0123456789"))]
            zone = frac[len(digits) :]
            text = f"{head}.{digits[:6]}{zone}"
        else:
            text = head
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else None


def severity_of(value: Any) -> str:
    word = str(value or "").upper()
    return word if word in RANK else "UNKNOWN"


def from_trivy_json(document: Mapping[str, Any], source: str) -> Report:
    """``trivy image -f json``: Results[].Vulnerabilities[] with VulnerabilityID/Severity."""
    findings = tuple(
        Finding(
            str(v.get("VulnerabilityID", "")), severity_of(v.get("Severity")), v.get("PkgName", "")
        )
        for result in document.get("Results") or ()
        for v in result.get("Vulnerabilities") or ()
    )
    metadata = document.get("Metadata") or {}
    digests = [d.split("@", 1)[-1] for d in metadata.get("RepoDigests") or ()]
    return Report(source, findings, parse_time(document.get("CreatedAt")), next(iter(digests), ""))


def _cvss_severity(score: float) -> str:
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    return "LOW" if score > 0 else "NONE"


def _sarif_rule_severity(rule: Mapping[str, Any]) -> str | None:
    properties = rule.get("properties") or {}
    for tag in properties.get("tags") or ():
        if str(tag).upper() in RANK and str(tag).upper() != "NONE":
            return str(tag).upper()
    score = properties.get("security-severity")
    try:
        return _cvss_severity(float(score)) if score is not None else None
    except (TypeError, ValueError):
        return None


_LEVELS = {"error": "HIGH", "warning": "MEDIUM", "note": "LOW", "none": "NONE"}


def from_sarif(document: Mapping[str, Any], source: str) -> Report:
    """SARIF 2.1.0: one finding per result; severity from the rule's severity tag (Trivy),
    else its ``security-severity`` CVSS score, else the result's level."""
    findings: list[Finding] = []
    created: datetime | None = None
    for run in document.get("runs") or ():
        rules = {
            r.get("id"): r for r in ((run.get("tool") or {}).get("driver") or {}).get("rules") or ()
        }
        for result in run.get("results") or ():
            rule_id = str(result.get("ruleId", ""))
            severity = _sarif_rule_severity(rules.get(rule_id) or {}) or _LEVELS.get(
                str(result.get("level") or "warning"), "MEDIUM"
            )
            findings.append(Finding(rule_id, severity))
        for invocation in run.get("invocations") or ():
            when = parse_time(invocation.get("endTimeUtc") or invocation.get("startTimeUtc"))
            if when and (created is None or when > created):
                created = when
    return Report(source, tuple(findings), created)


def from_vulnerability_report(resource: Mapping[str, Any]) -> Report:
    """A Trivy Operator ``VulnerabilityReport`` (aquasecurity.github.io/v1alpha1)."""
    meta = resource.get("metadata") or {}
    report = resource.get("report") or {}
    findings = tuple(
        Finding(
            str(v.get("vulnerabilityID", "")), severity_of(v.get("severity")), v.get("resource", "")
        )
        for v in report.get("vulnerabilities") or ()
    )
    name = f"VulnerabilityReport {meta.get('namespace', '')}/{meta.get('name', '')}"
    return Report(
        name,
        findings,
        parse_time(report.get("updateTimestamp") or meta.get("creationTimestamp")),
        str((report.get("artifact") or {}).get("digest") or ""),
    )


def parse_report(document: Mapping[str, Any], source: str) -> Report | None:
    """Trivy JSON or SARIF, told apart by their shape; None when it is neither."""
    if "runs" in document and ("version" in document or "$schema" in document):
        return from_sarif(document, source)
    if "Results" in document or "SchemaVersion" in document:
        return from_trivy_json(document, source)
    return None


def ignored(
    finding: Finding, ignore: Iterable[IgnoredFinding], now: datetime
) -> IgnoredFinding | None:
    """The ignore entry that still covers ``finding`` at ``now``, if any."""
    for entry in ignore:
        if entry.id == finding.id and (entry.expires is None or now < entry.expires):
            return entry
    return None


@dataclass(frozen=True)
class Assessment:
    passed: bool
    reason: str
    counted: tuple[Finding, ...] = ()


def assess(
    report: Report,
    *,
    max_severity: str,
    ignore: Sequence[IgnoredFinding],
    max_age: float,
    now: datetime,
) -> Assessment:
    """Does ``report`` let the candidate through at ``now``?

    It fails when it is older than ``max_age`` seconds (0: any age; a report with no
    creation time then fails, since its age cannot be proven), or when any finding ranks
    above ``max_severity`` and no unexpired ``ignore`` entry names it.
    """
    if max_age:
        if report.created is None:
            return Assessment(False, f"{report.source}: has no creation time to check its age")
        age = (now - report.created).total_seconds()
        if age > max_age:
            return Assessment(
                False, f"{report.source}: {age:.0f}s old, older than maxReportAge {max_age:g}s"
            )
    limit = RANK[max_severity]
    counted = tuple(
        f for f in report.findings if RANK[f.severity] > limit and not ignored(f, ignore, now)
    )
    expired = sorted(
        {
            e.id
            for f in counted
            for e in ignore
            if e.id == f.id and e.expires is not None and now >= e.expires
        }
    )
    if counted:
        worst = max(counted, key=lambda f: RANK[f.severity])
        ids = sorted({f.id for f in counted})
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        note = f" (ignore expired for {', '.join(expired)})" if expired else ""
        return Assessment(
            False,
            f"{report.source}: {len(counted)} finding(s) above {max_severity}, worst "
            f"{worst.severity}: {shown}{note}",
            counted,
        )
    return Assessment(
        True, f"{report.source}: no finding above {max_severity} ({len(report.findings)} total)"
    )

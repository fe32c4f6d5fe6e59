"""Table tests of reading vulnerability reports and deciding on them (imagedrift.core.vulns)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagedrift.core.validation_spec import IgnoredFinding
from imagedrift.core.vulns import (
    Finding,
    Report,
    assess,
    from_vulnerability_report,
    parse_report,
)

NOW = datetime(2024, 6, 1, tzinfo=UTC)
DAY = 86400.0


def report(*findings: tuple[str, str], created: datetime | None = NOW) -> Report:
    return Report("r", tuple(Finding(i, s) for i, s in findings), created)


@pytest.mark.parametrize(
    ("label", "rep", "max_severity", "ignore", "max_age", "passed", "reason"),
    [
        ("clean", report(), "HIGH", (), 0, True, "no finding above HIGH"),
        ("high allowed at HIGH", report(("C1", "HIGH")), "HIGH", (), 0, True, "(1 total)"),
        (
            "critical refused at HIGH",
            report(("C1", "CRITICAL")),
            "HIGH",
            (),
            0,
            False,
            "worst CRITICAL: C1",
        ),
        (
            "medium refused at LOW",
            report(("C1", "MEDIUM"), ("C2", "LOW")),
            "LOW",
            (),
            0,
            False,
            "1 finding(s) above LOW",
        ),
        ("NONE refuses even LOW", report(("C1", "LOW")), "NONE", (), 0, False, "above NONE"),
        ("NONE refuses UNKNOWN", report(("C1", "UNKNOWN")), "NONE", (), 0, False, "above NONE"),
        ("UNKNOWN ranks like LOW", report(("C1", "UNKNOWN")), "LOW", (), 0, True, ""),
        (
            "ignored without expiry",
            report(("C1", "CRITICAL")),
            "HIGH",
            (IgnoredFinding("C1"),),
            0,
            True,
            "",
        ),
        (
            "ignore not yet expired",
            report(("C1", "CRITICAL")),
            "HIGH",
            (IgnoredFinding("C1", NOW + timedelta(days=1)),),
            0,
            True,
            "",
        ),
        (
            "ignore expired",
            report(("C1", "CRITICAL")),
            "HIGH",
            (IgnoredFinding("C1", NOW - timedelta(seconds=1)),),
            0,
            False,
            "ignore expired for C1",
        ),
        (
            "ignore expires exactly now",
            report(("C1", "CRITICAL")),
            "HIGH",
            (IgnoredFinding("C1", NOW),),
            0,
            False,
            "ignore expired",
        ),
        (
            "ignore names another CVE",
            report(("C1", "CRITICAL")),
            "HIGH",
            (IgnoredFinding("C2"),),
            0,
            False,
            "C1",
        ),
        ("fresh enough", report(created=NOW - timedelta(hours=23)), "HIGH", (), DAY, True, ""),
        (
            "too old",
            report(created=NOW - timedelta(hours=25)),
            "HIGH",
            (),
            DAY,
            False,
            "older than maxReportAge",
        ),
        (
            "age unknown with a limit",
            report(created=None),
            "HIGH",
            (),
            DAY,
            False,
            "no creation time",
        ),
        ("age unknown without a limit", report(created=None), "HIGH", (), 0, True, ""),
        (
            "many ids are shortened",
            report(*((f"C{i}", "CRITICAL") for i in range(8))),
            "HIGH",
            (),
            0,
            False,
            "and 3 more",
        ),
    ],
)
def test_assess(
    label: str,
    rep: Report,
    max_severity: str,
    ignore: tuple[IgnoredFinding, ...],
    max_age: float,
    passed: bool,
    reason: str,
) -> None:
    outcome = assess(rep, max_severity=max_severity, ignore=ignore, max_age=max_age, now=NOW)
    assert outcome.passed is passed, outcome.reason
    assert reason in outcome.reason


TRIVY = {
    "SchemaVersion": 2,
    "CreatedAt": "2024-05-31T10:00:00.123456789Z",
    "Metadata": {"RepoDigests": ["r/app@sha256:aa"]},
    "Results": [
        {
            "Vulnerabilities": [
                {"VulnerabilityID": "CVE-1", "Severity": "CRITICAL", "PkgName": "ssl"}
            ]
        },
        {"Target": "no vulns"},
        {"Vulnerabilities": [{"VulnerabilityID": "CVE-2", "Severity": "weird"}]},
    ],
}
SARIF = {
    "version": "2.1.0",
    "runs": [
        {
            "tool": {
                "driver": {
                    "rules": [
                        {"id": "CVE-1", "properties": {"tags": ["vulnerability", "HIGH"]}},
                        {"id": "CVE-2", "properties": {"security-severity": "9.8"}},
                        {"id": "CVE-3", "properties": {}},
                    ]
                }
            },
            "results": [
                {"ruleId": "CVE-1", "level": "error"},
                {"ruleId": "CVE-2", "level": "error"},
                {"ruleId": "CVE-3", "level": "note"},
            ],
            "invocations": [{"endTimeUtc": "2024-05-30T00:00:00Z"}],
        }
    ],
}


@pytest.mark.parametrize(
    ("label", "document", "findings", "created"),
    [
        (
            "trivy json",
            TRIVY,
            [("CVE-1", "CRITICAL"), ("CVE-2", "UNKNOWN")],
            datetime(2024, 5, 31, 10, 0, 0, 123456, tzinfo=UTC),
        ),
        (
            "sarif: tag, then CVSS score, then level",
            SARIF,
            [("CVE-1", "HIGH"), ("CVE-2", "CRITICAL"), ("CVE-3", "LOW")],
            datetime(2024, 5, 30, tzinfo=UTC),
        ),
    ],
)
def test_parse_report(
    label: str, document: dict[str, object], findings: list[tuple[str, str]], created: datetime
) -> None:
    parsed = parse_report(document, "src")
    assert parsed is not None
    assert [(f.id, f.severity) for f in parsed.findings] == findings
    assert parsed.created == created


def test_neither_trivy_nor_sarif_is_none() -> None:
    assert parse_report({"spdxVersion": "SPDX-2.3"}, "sbom") is None


def test_trivy_operator_vulnerability_report() -> None:
    parsed = from_vulnerability_report(
        {
            "metadata": {"namespace": "ns", "name": "replicaset-web"},
            "report": {
                "artifact": {"digest": "sha256:aa"},
                "updateTimestamp": "2024-05-31T00:00:00Z",
                "vulnerabilities": [{"vulnerabilityID": "CVE-1", "severity": "HIGH"}],
            },
        }
    )
    assert parsed.source == "VulnerabilityReport ns/replicaset-web"
    assert parsed.digest == "sha256:aa"
    assert [(f.id, f.severity) for f in parsed.findings] == [("CVE-1", "HIGH")]
    assert parsed.created == datetime(2024, 5, 31, tzinfo=UTC)

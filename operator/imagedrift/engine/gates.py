"""Validation gates a candidate must pass before it may run.

Lineage (the candidate sits on the current base digest) is always required and is proven
before ``validate`` is called; the policy's ``spec.validation`` adds, in this order:

- ``signature``: a cosign or Notation signature attached to the candidate (OCI referrers,
  the referrers tag schema, or cosign's ``.sig`` tag); verified when ``publicKey`` is set.
- ``vulnerabilities``: a Trivy JSON or SARIF report attached as a referrer, or a Trivy
  Operator VulnerabilityReport for the digest; the newest report decides.
- ``smokeTest``: a Job running the candidate image; it runs once per candidate digest
  (recorded in ``status.smokeTests``) and only after the other gates passed.

Every gate's outcome is one reason ``"<gate>: <why>"``; a verdict may be pending while a
smoke test runs. Registry faults propagate (they are not verdicts); a gate that needs what
the Kubernetes port cannot do rejects the candidate and says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from imagedrift.core import signatures as sig
from imagedrift.core import vulns
from imagedrift.core.conditions import parse_timestamp, timestamp
from imagedrift.core.lineage import Lineage
from imagedrift.core.podhealth import job_pod_trouble
from imagedrift.core.records import SmokeRecord
from imagedrift.core.refs import ImageRef, short_digest
from imagedrift.core.sandbox import Sandbox, refusals, sandboxed
from imagedrift.core.spec import (
    POLICY_LABEL,
    PolicySpec,
    SignatureGate,
    SmokeTestGate,
    VulnerabilityGate,
)
from imagedrift.engine.ports import PodReader, ValidationKube
from imagedrift.errors import KubeConflict, KubeError, NotFound
from imagedrift.registry.base import RegistryClient
from imagedrift.registry.referrers import Referrer, list_referrers

log = logging.getLogger(__name__)

NOTATION_ARTIFACT = "application/vnd.cncf.notary.signature"
COSIGN_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"
# Vulnerability reports as referrers: by artifactType, or by the layer's media type.
TRIVY_JSON_TYPES = frozenset(
    {"application/vnd.aquasecurity.trivy.report.json.v1+json", "application/vnd.trivy.report+json"}
)
SARIF_TYPES = frozenset(
    {"application/sarif+json", "application/vnd.aquasecurity.trivy.report.sarif.v1+json"}
)
CREATED_ANNOTATION = "org.opencontainers.image.created"
SMOKE_LABEL = "imagedrift.io/smoke-test"
CANDIDATE_ANNOTATION = "imagedrift.io/candidate"
MAX_REPORT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]
    pending: bool = False  # a gate is still running: decide again soon


@dataclass
class GateIO:
    """What the gates may read and write during one check."""

    client: RegistryClient
    kube: object  # a KubePort; ValidationKube abilities are used when present
    now: datetime
    smoke_tests: MutableMapping[str, SmokeRecord] = field(default_factory=dict)  # by digest


@dataclass(frozen=True)
class _Gate:
    passed: bool
    reason: str
    pending: bool = False


def validate(
    policy: PolicySpec,
    candidate: ImageRef,
    lineage: Lineage,
    lineage_reason: str,
    io: GateIO | None = None,
) -> Verdict:
    """Every gate's outcome for ``candidate``; passed only when all pass."""
    reasons = [f"lineage: {lineage_reason}"]
    gates = policy.validation
    unknown = sorted(set(policy.raw_validation) - {"signature", "vulnerabilities", "smokeTest"})
    if unknown:
        # A gate we cannot evaluate must never be skipped silently: reject instead.
        return Verdict(
            False,
            (*reasons, f"gates not supported by this operator version: {', '.join(unknown)}"),
        )
    if not (gates.signature or gates.vulnerabilities or gates.smoke_test):
        return Verdict(True, tuple(reasons))
    if io is None:
        return Verdict(False, (*reasons, "gates: no registry access to evaluate them"))
    referrers: list[Referrer] | None = None
    if gates.signature or gates.vulnerabilities:
        referrers = list_referrers(io.client, candidate)
    passed = True
    if gates.signature:
        outcome = _signature(gates.signature, io.client, candidate, referrers or [])
        reasons.append(f"signature: {outcome.reason}")
        passed = passed and outcome.passed
    if gates.vulnerabilities:
        outcome = _vulnerabilities(gates.vulnerabilities, io, candidate, referrers or [])
        reasons.append(f"vulnerabilities: {outcome.reason}")
        passed = passed and outcome.passed
    if gates.smoke_test:
        if not passed:
            reasons.append("smokeTest: not run: an earlier gate failed")
            return Verdict(False, tuple(reasons))
        outcome = _smoke_test(gates.smoke_test, io, policy.name, candidate)
        reasons.append(f"smokeTest: {outcome.reason}")
        if outcome.pending:
            return Verdict(False, tuple(reasons), pending=True)
        passed = passed and outcome.passed
    return Verdict(passed, tuple(reasons))


# -- signature --------------------------------------------------------------------------------


def _is_cosign(referrer: Referrer) -> bool:
    return referrer.artifact_type == COSIGN_ARTIFACT or any(
        layer.media_type == sig.COSIGN_PAYLOAD
        or sig.COSIGN_SIGNATURE_ANNOTATION in layer.annotations
        for layer in referrer.layers
    )


def _signature(
    gate: SignatureGate, client: RegistryClient, candidate: ImageRef, referrers: Sequence[Referrer]
) -> _Gate:
    cosign = [r for r in referrers if _is_cosign(r)] if gate.type in ("any", "cosign") else []
    notation = (
        [r for r in referrers if r.artifact_type == NOTATION_ARTIFACT]
        if gate.type in ("any", "notation")
        else []
    )
    wanted = "cosign or Notation" if gate.type == "any" else gate.type
    if not cosign and not notation:
        return _Gate(
            False,
            f"no {wanted} signature attached to {short_digest(candidate.digest)} "
            "(referrers API, referrers tag schema, cosign .sig tag)",
        )
    found = ", ".join(
        sorted(
            {
                f"{'cosign' if r in cosign else 'notation'} ({r.found_by})"
                for r in [*cosign, *notation]
            }
        )
    )
    if not gate.public_key:
        return _Gate(True, f"found {found}; presence only (no publicKey to verify with)")
    failures: list[str] = []
    for referrer in cosign:
        for layer in referrer.layers:
            signature = layer.annotations.get(sig.COSIGN_SIGNATURE_ANNOTATION, "")
            if not signature:
                continue
            payload = _blob(client, candidate, layer.digest)
            if payload is None:
                failures.append(f"cosign payload {short_digest(layer.digest)} is missing")
                continue
            check = sig.verify_cosign(payload, signature, gate.public_key, candidate.digest)
            if check.ok:
                return _Gate(True, check.reason)
            failures.append(check.reason)
    for referrer in notation:
        for layer in referrer.layers:
            if layer.media_type == sig.NOTATION_COSE:
                failures.append("notation COSE envelopes cannot be verified by key here")
                continue
            if layer.media_type != sig.NOTATION_JWS:
                continue
            envelope = _blob(client, candidate, layer.digest)
            if envelope is None:
                failures.append(f"notation envelope {short_digest(layer.digest)} is missing")
                continue
            check = sig.verify_notation_jws(envelope, gate.public_key, candidate.digest)
            if check.ok:
                return _Gate(True, check.reason)
            failures.append(check.reason)
    return _Gate(False, "; ".join(dict.fromkeys(failures)) or f"found {found} but none verifiable")


def _blob(client: RegistryClient, candidate: ImageRef, digest: str) -> bytes | None:
    try:
        return client.get_blob(candidate, digest)
    except NotFound:
        return None


# -- vulnerabilities ---------------------------------------------------------------------------


def _report_of(
    client: RegistryClient, candidate: ImageRef, referrer: Referrer
) -> vulns.Report | None:
    for layer in referrer.layers:
        kinds = {referrer.artifact_type, layer.media_type}
        if not kinds & (TRIVY_JSON_TYPES | SARIF_TYPES):
            continue
        data = _blob(client, candidate, layer.digest)
        if data is None or len(data) > MAX_REPORT_BYTES:
            continue
        try:
            document = json.loads(data)
        except ValueError:
            continue
        kind = "SARIF" if kinds & SARIF_TYPES else "Trivy"
        report = vulns.parse_report(
            document, f"{kind} report {short_digest(referrer.digest)} ({referrer.found_by})"
        )
        if report is None:
            continue
        created = vulns.parse_time(referrer.annotations.get(CREATED_ANNOTATION))
        if created is not None:
            report = vulns.Report(report.source, report.findings, created, report.digest)
        return report
    return None


def _vulnerabilities(
    gate: VulnerabilityGate, io: GateIO, candidate: ImageRef, referrers: Sequence[Referrer]
) -> _Gate:
    reports: list[vulns.Report] = []
    if gate.source in ("any", "referrer"):
        for referrer in referrers:
            report = _report_of(io.client, candidate, referrer)
            if report:
                reports.append(report)
    if gate.source in ("any", "cluster"):
        if isinstance(io.kube, ValidationKube):
            reports.extend(
                vulns.from_vulnerability_report(r)
                for r in io.kube.list_vulnerability_reports(candidate.digest)
            )
        elif gate.source == "cluster":
            return _Gate(False, "this operator's Kubernetes port cannot read VulnerabilityReports")
    if not reports:
        where = {
            "any": "as a referrer or as a VulnerabilityReport in the cluster",
            "referrer": "as a referrer",
            "cluster": "as a VulnerabilityReport in the cluster",
        }[gate.source]
        return _Gate(
            False, f"no Trivy or SARIF report for {short_digest(candidate.digest)} {where}"
        )
    # A rescan supersedes older reports: the newest decides (undated ones rank oldest).
    newest = max(reports, key=lambda r: r.created.timestamp() if r.created else float("-inf"))
    outcome = vulns.assess(
        newest,
        max_severity=gate.max_severity,
        ignore=gate.ignore,
        max_age=gate.max_report_age,
        now=io.now,
    )
    return _Gate(outcome.passed, outcome.reason)


# -- smoke test --------------------------------------------------------------------------------


def smoke_job_name(policy: str, digest: str) -> str:
    """A stable name per (policy, candidate digest), so a restart finds the Job it made."""
    slug = re.sub(r"[^a-z0-9-]+", "-", policy.lower()).strip("-")[:30].rstrip("-")
    return f"smoke-{slug}-{digest.partition(':')[2][:16]}"


def smoke_job(
    gate: SmokeTestGate, policy: str, candidate: ImageRef, sandbox: Sandbox
) -> dict[str, Any]:
    """The Job that smoke-tests ``candidate``: the template, sandboxed, running it."""
    spec = sandboxed(gate.template, str(candidate), sandbox)
    spec.setdefault("backoffLimit", 0)
    spec.setdefault("activeDeadlineSeconds", max(int(gate.timeout), 1))
    spec.setdefault("ttlSecondsAfterFinished", 3600)
    spec["template"].setdefault("spec", {}).setdefault("restartPolicy", "Never")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": smoke_job_name(policy, candidate.digest),
            "namespace": sandbox.namespace,
            "labels": {SMOKE_LABEL: "true"},
            "annotations": {CANDIDATE_ANNOTATION: str(candidate), POLICY_LABEL: policy},
        },
        "spec": spec,
    }


def job_outcome(job: Mapping[str, Any]) -> tuple[str, str]:
    """("Succeeded" | "Failed" | "Running", why) from a Job's conditions."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded", "job succeeded"
        if condition.get("type") == "Failed":
            detail = condition.get("message") or condition.get("reason") or ""
            return "Failed", f"job failed: {detail}".rstrip(": ")
    return "Running", "job running"


def _job_pods(io: GateIO, namespace: str, job: str) -> tuple[str, str]:
    """``core.podhealth.job_pod_trouble`` of the Job's pods; ("", "") when they cannot be
    read (the Job's own outcome and deadline still decide)."""
    if not isinstance(io.kube, PodReader):
        return "", ""
    try:
        pods = io.kube.list_pods(namespace, f"job-name={job}")
    except KubeError as exc:
        log.info("%s/%s: smoke-test pods not read (%s)", namespace, job, exc)
        return "", ""
    return job_pod_trouble(pods)


def _smoke_test(gate: SmokeTestGate, io: GateIO, policy: str, candidate: ImageRef) -> _Gate:
    record = io.smoke_tests.get(candidate.digest)
    if record and record.finished:
        return _Gate(
            record.result == "Succeeded",
            f"{record.namespace}/{record.job}: {record.reason} (ran once for this digest; "
            "not repeated)",
        )
    if not isinstance(io.kube, ValidationKube):
        return _Gate(False, "this operator's Kubernetes port cannot run Jobs")
    refused = refusals(gate.template)
    if refused:  # parse_policy refuses these already; never run one that slipped through
        return _Gate(False, f"refused: {'; '.join(refused)}")
    sandbox = io.kube.sandbox
    namespace = sandbox.namespace
    name = smoke_job_name(policy, candidate.digest)
    if record is None:
        # A conflict: an earlier run made it and its status write was lost; follow that Job.
        with contextlib.suppress(KubeConflict):
            io.kube.create_job(namespace, smoke_job(gate, policy, candidate, sandbox))
        record = SmokeRecord(
            candidate.digest, name, namespace, "Running", "job created", timestamp(io.now)
        )
        io.smoke_tests[candidate.digest] = record
    job = io.kube.get_job(namespace, name)
    if job is None:
        result, why = "Failed", "job disappeared before it finished"
    else:
        result, why = job_outcome(job)
    if result != "Succeeded":
        # The Job's own words ("DeadlineExceeded") hide the cause; its pod's say it.
        failed, waiting = _job_pods(io, namespace, name)
        if failed:
            why = f"job failed: {failed}" if result == "Running" else f"{why}; {failed}"
            result = "Failed"
        elif waiting:
            why = f"{why}; {waiting}"
    started = parse_timestamp(record.started_at) or io.now
    if result == "Running" and (io.now - started).total_seconds() > gate.timeout:
        result, why = "Failed", f"did not succeed within {gate.timeout:g}s ({why})"
    finished = "" if result == "Running" else timestamp(io.now)
    io.smoke_tests[candidate.digest] = replace(
        record, result=result, reason=why, finished_at=finished
    )
    if result == "Running":
        return _Gate(False, f"{namespace}/{name}: {why}", pending=True)
    return _Gate(result == "Succeeded", f"{namespace}/{name}: {why}")

"""``imagedrift plan POLICY``: a dry run of the policy's next check.

The real engine (``PolicyChecker``) runs once against the real registries and the real
cluster, through a Kubernetes port that reads for real and *records* patches instead of
sending them. Nothing is written: no workload patch, no status, no Event.

A GitOps-managed workload of a policy that commits is planned as the operator would write
it: its repository is found from the Flux or Argo CD objects and read (credentials from
the Secrets the operator uses, ``IMAGEDRIFT_GIT_SECRET``), and the commit it would get is
shown as a diff (``engine.git_preview``); nothing is pushed.

A suspended policy is planned as if it were resumed (that is what an SRE asks before
``imagedrift resume``); the document says ``suspended: true``. Paused workloads stay held
back, with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from imagedrift.cli import render
from imagedrift.cli.cluster import describe
from imagedrift.core.conditions import Condition
from imagedrift.core.mirrors import parse_mirrors
from imagedrift.core.sandbox import Sandbox
from imagedrift.core.spec import PolicySpec
from imagedrift.core.workloads import (
    STATE_ANNOTATION,
    WorkloadRef,
    WorkloadState,
    containers,
    ref_of,
    selected,
)
from imagedrift.engine.caches import BaseWatcher, ImageCache
from imagedrift.engine.check import CheckResult, PolicyChecker
from imagedrift.engine.commits import Committer
from imagedrift.engine.git_preview import GitPreview, PreviewCommit
from imagedrift.engine.git_writes import GitWrite
from imagedrift.engine.gitops_sources import (
    ARGOCD_NAMESPACE,
    INDEX_SECRET,
    GitCredentialStore,
    SourceFinder,
)
from imagedrift.engine.ports import GitOpsReader, KubePort, PodReader, ValidationKube
from imagedrift.engine.proposals import PullRequestClients
from imagedrift.engine.registries import RegistryPool, SecretReader


class RecordingKube:
    """A ``KubePort`` (and ``ValidationKube``) that reads through ``reader`` and records
    every write instead of sending it: workload patches in ``patches``, smoke-test Jobs in
    ``jobs`` (and ``run_check`` puts the commits it previewed in ``commits``). A Job it
    would create reads back as running, so its gate stays pending."""

    def __init__(self, reader: KubePort, namespace: str = "") -> None:
        self._reader = reader
        self.namespace = namespace or str(getattr(reader, "namespace", ""))
        self.sandbox: Sandbox = getattr(reader, "sandbox", None) or Sandbox()
        self._seen: dict[WorkloadRef, dict[str, Any]] = {}
        self.patches: list[tuple[WorkloadRef, dict[str, Any], dict[str, Any]]] = []
        self.jobs: list[dict[str, Any]] = []
        self.commits: list[PreviewCommit] = []

    def remember(self, body: Mapping[str, Any]) -> None:
        """Keep ``body`` as read (the engine patches what the watch cache holds)."""
        self._seen[ref_of(body)] = copy.deepcopy(dict(body))

    def get_workload(self, ref: WorkloadRef) -> dict[str, Any] | None:
        body = self._reader.get_workload(ref)
        if body is not None:
            self._seen[ref] = copy.deepcopy(body)
        return body

    def patch_workload(self, ref: WorkloadRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Record; answer with the body as read (the engine only uses it as Event target)."""
        before = self._seen.get(ref) or {"kind": ref.kind, "metadata": {}}
        self.patches.append((ref, copy.deepcopy(dict(patch)), before))
        return copy.deepcopy(before)

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        if isinstance(self._reader, PodReader):
            return self._reader.list_pods(namespace, selector)
        return []

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        job = copy.deepcopy(dict(body))
        job.setdefault("metadata", {})["namespace"] = namespace
        self.jobs.append(job)
        return copy.deepcopy(job)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        for job in self.jobs:
            meta = job.get("metadata") or {}
            if (meta.get("namespace"), meta.get("name")) == (namespace, name):
                return {**job, "status": {}}  # would be running now
        if isinstance(self._reader, ValidationKube):
            return self._reader.get_job(namespace, name)
        return None

    def list_vulnerability_reports(self, digest: str) -> list[dict[str, Any]]:
        if isinstance(self._reader, ValidationKube):
            return self._reader.list_vulnerability_reports(digest)
        return []


def governed_workloads(
    spec: PolicySpec, workloads: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    return [w for w in workloads if selected(w, spec)]


def run_check(
    spec: PolicySpec,
    body: Mapping[str, Any],
    workloads: Iterable[Mapping[str, Any]],
    reader: KubePort,
    secrets: SecretReader,
    *,
    operator_namespace: str,
    verify: bool | str | Path,
    now: datetime,
    clock: float,
) -> tuple[CheckResult, RecordingKube]:
    """One check of ``spec`` with fresh caches; patches recorded, never sent, commits
    previewed, never pushed."""
    if spec.rollout.suspend:
        spec = dataclasses.replace(spec, rollout=dataclasses.replace(spec.rollout, suspend=False))
    workloads = list(workloads)
    kube = RecordingKube(reader, operator_namespace)
    for workload in workloads:
        kube.remember(workload)
    # The operator's mirrors, when the CLI is given the same setting.
    mirrors = parse_mirrors(os.environ.get("IMAGEDRIFT_REGISTRY_MIRRORS", ""))
    pool = RegistryPool(secrets, namespace=operator_namespace, verify=verify, mirrors=mirrors)
    sources, preview = _write_back(reader)
    committer = None
    if preview is not None:
        # Pull requests are looked up as the operator does, never opened or edited.
        prs = PullRequestClients(preview.credentials, verify=verify)
        committer = Committer(preview, prs, read_only=True)
    try:
        checker = PolicyChecker(
            pool, kube, ImageCache(), BaseWatcher(), sources=sources, committer=committer
        )
        result = checker.check(spec, body, workloads, now, clock)
    finally:
        pool.close()
    if preview is not None:
        kube.commits.extend(preview.commits)
    return result, kube


def _write_back(reader: KubePort) -> tuple[SourceFinder | None, GitPreview | None]:
    """GitOps write-back wired as the operator wires it (the same settings), its commits
    previewed; none without a reader of the GitOps objects and Secrets."""
    if not isinstance(reader, GitOpsReader):
        return None, None
    argocd = os.environ.get("IMAGEDRIFT_ARGOCD_NAMESPACE") or ARGOCD_NAMESPACE
    index = os.environ.get("IMAGEDRIFT_GIT_SECRET") or INDEX_SECRET
    sources = SourceFinder(reader, argocd_namespace=argocd)
    return sources, GitPreview(GitCredentialStore(reader, index=index))


def _action(state: WorkloadState) -> str:
    phase = state.rollout.phase if state.rollout else ""
    return {"Progressing": "roll", "Complete": "complete", "RolledBack": "rollback"}.get(
        phase, phase.lower() or "record"
    )


def _job(job: Mapping[str, Any]) -> dict[str, Any]:
    meta = job.get("metadata") or {}
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return {
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "images": [str(c.get("image", "")) for c in pod.get("containers") or []],
    }


def _condition(c: Condition) -> dict[str, str]:
    return {
        "type": c.type,
        "status": "True" if c.status else "False",
        "reason": c.reason,
        "message": c.message,
    }


def build(
    spec: PolicySpec, body: Mapping[str, Any], result: CheckResult, kube: RecordingKube
) -> dict[str, Any]:
    """The ``Plan`` document from one recorded check."""
    status = result.status
    before = (body.get("status") or {}).get("base") or {}
    base = status.get("base") or {}
    rollouts = []
    planned: set[tuple[str, str]] = set()
    by_commit = {w.key: w for c in kube.commits for w in c.writes}
    for ref, patch, read in kube.patches:
        if STATE_ANNOTATION not in ((patch.get("metadata") or {}).get("annotations") or {}):
            continue  # only the workload's status note: not a rollout
        state = WorkloadState.decode({"metadata": patch.get("metadata") or {}})
        record = state.rollout
        running = containers(read)
        target = dict(record.target) if record else {}
        images = containers({"kind": ref.kind, "spec": patch.get("spec") or {}})
        write = by_commit.get(str(ref))
        if write is not None:  # the images go to git; the patch only records the commit
            images = {c.container: c.new_image for c in write.changes}
            running = {c.container: c.old_image for c in write.changes}
        action = _action(state)
        changes = [
            {
                "container": name,
                "from": running.get(name, ""),
                "to": image,
                "tag": str((record.tags if record else {}).get(name, "")),
            }
            for name, image in sorted(images.items())
        ]
        if action == "roll":
            planned.update((str(ref), name) for name in target)
        rollouts.append(
            {
                "workload": str(ref),
                "kind": ref.kind,
                "namespace": ref.namespace,
                "name": ref.name,
                "action": action,
                "baseDigest": record.base_digest if record else "",
                "containers": changes,
                "reason": record.reason if record else "",
                "git": _source(write) if write is not None else None,
                "patch": patch,
            }
        )
    held: list[dict[str, str]] = []
    up_to_date: list[dict[str, str]] = []
    in_progress: list[dict[str, str]] = []
    for item in (status.get("workloads") or {}).get("items") or []:
        key = (str(item.get("workload", "")), str(item.get("container", "")))
        if key in planned:
            continue  # listed under rollouts
        row = {
            "workload": key[0],
            "container": key[1],
            "image": str(item.get("image", "")),
            "baseDigest": str(item.get("baseDigest", "")),
            "state": str(item.get("state", "")),
            "reason": str(item.get("reason", "")),
        }
        if row["state"] == "UpToDate":
            up_to_date.append(row)
        elif row["state"] == "RollingOut":
            in_progress.append(row)
        else:
            held.append(row)
    return render.document(
        "Plan",
        policy=spec.name,
        suspended=bool(((body.get("spec") or {}).get("rollout") or {}).get("suspend", False)),
        base={
            "image": str(base.get("image", "")),
            "tag": str(base.get("tag", "")),
            "digest": str(base.get("digest", "")),
            "recordedDigest": str(before.get("digest", "")),
            "changed": bool(before.get("digest")) and before.get("digest") != base.get("digest"),
        },
        candidate=dict(status.get("candidate") or {}) or None,
        tags=_tags(result),
        rollouts=rollouts,
        heldBack=held,
        rollingOut=in_progress,
        smokeTests=[_job(j) for j in kube.jobs],
        commits=[_commit(c) for c in kube.commits],
        upToDate=up_to_date,
        counts=dict(result.counts),
        conditions=[_condition(c) for c in result.conditions],
        events=[{"type": e.type, "reason": e.reason, "message": e.message} for e in result.events],
        lastError=str(status.get("lastError", "")),
    )


def _source(write: GitWrite) -> dict[str, str]:
    s = write.source
    return {"repository": s.url, "branch": s.branch, "path": s.path, "via": s.via}


def _commit(c: PreviewCommit) -> dict[str, Any]:
    """One repository branch's commit as it would be made: its message and its diff."""
    return {
        "repository": c.url,
        "branch": c.branch,
        "parent": c.parent,
        "pullRequestBranch": c.proposed_on,
        "author": f"{c.author.name} <{c.author.email}>" if c.author else "",
        "message": c.message,
        "workloads": [
            {"workload": r.key, "outcome": str(r.outcome), "reason": r.reason, "files": [*r.files]}
            for r in c.written
        ],
        "diff": c.diff,
        "error": c.error,
    }


def _tags(result: CheckResult) -> list[dict[str, Any]]:
    """Per (repository, running tag): every listed tag and what became of it."""
    out = []
    for (repository, running), search in sorted(result.tags.items()):
        out.append(
            {
                "repository": repository,
                "runningTag": running,
                "policy": search.policy,
                "candidate": search.candidate.tag if search.candidate else "",
                "refused": [search.refused] if search.refused else [],
                "tags": [{"tag": n.tag, "fate": n.fate, "reason": n.reason} for n in search.notes],
            }
        )
    return out


# Tags listed per repository in the table; -o json/yaml has them all.
TABLE_TAGS = 40
# Inspected tags first (newest first, as inspected), then the ones the selection set aside.
FATE_ORDER = {
    fate: i
    for i, fate in enumerate(
        (
            "running",
            "not on base",
            "refused",
            "taken",
            "not inspected",
            "lower",
            "beyond maxCandidates",
            "ineligible",
            "ignored",
            "not allowed",
            "excluded",
            "not a tag",
        )
    )
}


def _tag_rows(doc: Mapping[str, Any], width: int) -> list[str]:
    rows: list[str] = []
    for group in doc.get("tags") or []:
        rows.append(
            f"tags of {group['repository']} (running {group['runningTag']}, {group['policy']}):"
        )
        for why in group["refused"]:
            rows.append(render.wrap(f"no candidate: {why}", width, indent=2))
        notes = group["tags"]
        shown = sorted(notes, key=lambda n: FATE_ORDER.get(n["fate"], len(FATE_ORDER)))
        shown = shown[:TABLE_TAGS]
        name_width = min(max((len(n["tag"]) for n in shown), default=0), 40)
        for n in shown:
            line = f"  {n['tag']:<{name_width}}  {n['fate']}"
            if n["reason"] and n["reason"] != n["fate"]:
                line += f": {n['reason']}"
            rows.append(line[: max(width, 40)])
        if len(notes) > len(shown):
            rows.append(f"  ... {len(notes) - len(shown)} more (-o json lists every tag)")
    return rows


def _commit_rows(doc: Mapping[str, Any], width: int) -> list[str]:
    """Per repository branch: what becomes of each workload, the message, the diff."""
    rows = ["would commit (nothing is pushed):"]
    for c in doc["commits"]:
        where = f"  {c['repository']}  branch {c['branch'] or '(default)'}"
        where += f"  at {c['parent'][:12]}" if c["parent"] else ""
        if c["pullRequestBranch"]:
            where += f"  (a pull request from {c['pullRequestBranch']})"
        rows.append(where)
        for w in c["workloads"]:
            said = f"{render.workload(w['workload'])}: {w['outcome']}"
            said += f": {w['reason']}" if w["reason"] else ""
            rows.append(render.wrap(said, width, indent=4))
        if c["error"]:
            rows.append(render.wrap(f"cannot be read: {c['error']}", width, indent=4))
        elif not c["diff"]:
            rows.append("    nothing to commit")
        else:
            rows.append(f"    author: {c['author'] or '-'}")
            rows.extend(["    message:", render.verbatim(c["message"], 6)])
            rows.extend(["    diff:", render.verbatim(c["diff"], 6)])
    return rows


def table(doc: Mapping[str, Any], now: datetime, width: int = render.DEFAULT_WIDTH) -> str:
    del now  # a plan is about the next check; no ages to show
    base = doc["base"]
    lines = [f"plan for imagepolicy {doc['policy']} (dry run: nothing was changed)"]
    if doc["suspended"]:
        lines.append(
            render.wrap(
                "the policy is suspended: planned as if resumed; nothing rolls until "
                f"`imagedrift resume {doc['policy']}`",
                width,
                indent=0,
            )
        )
    moved = f" (was {render.short(base['recordedDigest'])})" if base["changed"] else ""
    pairs = [
        ("base", f"{base['image']}:{base['tag']}" if base["tag"] else base["image"] or "-"),
        ("digest", render.short(base["digest"]) + moved),
    ]
    cand = doc["candidate"]
    if cand:
        text = f"{cand.get('image', '')} @ {render.short(cand.get('digest', ''))}  "
        text += str(cand.get("verdict", ""))
        if cand.get("reasons"):
            text += " (" + "; ".join(cand["reasons"]) + ")"
        pairs.append(("candidate", text))
    else:
        pairs.append(("candidate", "none"))
    conds = {c["type"]: c for c in doc["conditions"]}
    shown = next(
        (conds[t] for t in ("Stalled", "Reconciling", "Ready") if t in conds),
        None,
    )
    if shown:
        state = {"Stalled": "Stalled", "Reconciling": "Reconciling"}.get(shown["type"], "")
        state = state or ("Ready" if shown["status"] == "True" else "NotReady")
        pairs.append(("then", f"{state}  {shown['reason']}: {shown['message']}"))
    if doc["lastError"]:
        pairs.append(("error", doc["lastError"]))
    lines.append(render.fields(pairs, width))
    sections = ["\n".join(lines)]
    tag_rows = _tag_rows(doc, width)
    if tag_rows:
        sections.append("\n".join(tag_rows))
    if doc["rollouts"]:
        patches = ["would patch:"]
        for r in doc["rollouts"]:
            ref = WorkloadRef(r["kind"], r["namespace"], r["name"])
            how = " by commit" if r["git"] else ""
            patches.append(f"  {describe(ref)}  ({r['action']}{how})")
            for change in r["containers"]:
                tag = f" ({change['tag']})" if change["tag"] else ""
                patches.append(f"    {change['container']}: {change['from'] or '-'}")
                patches.append(f"      -> {render.short_image(change['to'])}{tag}")
            if not r["containers"]:
                patches.append(f"    state annotation only: {r['reason'] or r['action']}")
        sections.append("\n".join(patches))
    else:
        sections.append("would patch: nothing")
    if doc["commits"]:
        sections.append("\n".join(_commit_rows(doc, width)))
    if doc["smokeTests"]:
        jobs = ["would start smoke-test Jobs:"]
        jobs.extend(
            f"  job/{j['name']} -n {j['namespace']}: "
            + ", ".join(render.short_image(i) for i in j["images"])
            for j in doc["smokeTests"]
        )
        sections.append("\n".join(jobs))
    for key, title in (("heldBack", "held back"), ("rollingOut", "rolling out now")):
        if doc[key]:
            rows = [f"{title}:"]
            for h in doc[key]:
                rows.append(f"  {render.workload(h['workload'])}  {h['container']}: {h['state']}")
                rows.append(render.wrap(h["reason"], width, indent=4))
            sections.append("\n".join(rows))
    if doc["upToDate"]:
        names = ", ".join(
            f"{render.workload(u['workload'])} {u['container']}" for u in doc["upToDate"]
        )
        sections.append(render.fields([("up to date", names)], width, indent=0))
    return "\n\n".join(sections)

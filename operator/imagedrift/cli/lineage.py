"""``imagedrift lineage KIND/NAME -n NS``: per container, what it runs, on which base digest,
what imagedrift rolled there before, and what it would roll to next (or why not yet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from imagedrift.cli import render
from imagedrift.cli.cluster import describe
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import PolicySpec
from imagedrift.core.workloads import (
    WorkloadRef,
    WorkloadState,
    containers,
    governed_containers,
    paused,
    status_annotation,
)
from imagedrift.errors import InvalidReference


def _state_doc(state: WorkloadState) -> dict[str, Any]:
    r = state.rollout
    return {
        "tags": dict(state.tags),
        "rejected": list(state.rejected),
        "rollout": {
            "policy": r.policy,
            "baseDigest": r.base_digest,
            "target": dict(r.target),
            "previous": dict(r.previous),
            "tags": dict(r.tags),
            "phase": r.phase,
            "reason": r.reason,
            "startedAt": r.started_at,
            "finishedAt": r.finished_at,
        }
        if r
        else None,
    }


def _history(status: Mapping[str, Any], workload: str, container: str) -> list[dict[str, Any]]:
    """status.lineage rows for this workload/container, newest lineage entry first."""
    rows = []
    for entry in status.get("lineage") or []:
        for rollout in entry.get("rollouts") or []:
            if rollout.get("workload") == workload and rollout.get("container") == container:
                rows.append(
                    {
                        "baseDigest": str(entry.get("baseDigest", "")),
                        "app": str(entry.get("app", "")),
                        "appDigest": str(entry.get("appDigest", "")),
                        "tag": str(entry.get("tag", "")),
                        "verdict": str(entry.get("verdict", "")),
                        "reasons": [str(r) for r in entry.get("reasons") or []],
                        "validatedAt": str(entry.get("validatedAt", "")),
                        "previousImage": str(rollout.get("previousImage", "")),
                        "result": str(rollout.get("result", "")),
                        "reason": str(rollout.get("reason", "")),
                        "startedAt": str(rollout.get("startedAt", "")),
                        "finishedAt": str(rollout.get("finishedAt", "")),
                        "commit": str(rollout.get("commit", "")),
                        "rollbackCommit": str(rollout.get("rollbackCommit", "")),
                        "pullRequest": str(rollout.get("pullRequest", "")),
                    }
                )
    return sorted(rows, key=lambda r: r["startedAt"], reverse=True)


def _candidate(status: Mapping[str, Any], image: str) -> dict[str, Any] | None:
    """The policy's current candidate when it is a tag of this container's repository."""
    candidate = status.get("candidate") or {}
    try:
        same = ImageRef.parse(str(candidate.get("image", ""))).name == ImageRef.parse(image).name
    except InvalidReference:
        return None
    if not same:
        return None
    return {
        "image": str(candidate.get("image", "")),
        "tag": str(candidate.get("tag", "")),
        "digest": str(candidate.get("digest", "")),
        "verdict": str(candidate.get("verdict", "")),
        "reasons": [str(r) for r in candidate.get("reasons") or []],
    }


def _item(
    obj: Mapping[str, Any], status: Mapping[str, Any], workload: str, container: str, policy: str
) -> Mapping[str, Any]:
    """What the policy last said of one container: the workload's own annotation first
    (it has every state), then the policy's list of workloads needing attention; a
    workload in neither, of a policy that has checked and lists everything that needs
    attention, is up to date."""
    detail = status_annotation(obj)
    if detail.get("policy") == policy:
        for row in detail.get("containers") or []:
            if row.get("container") == container:
                return dict(row)
    listed = status.get("workloads") or {}
    for row in listed.get("items") or []:
        if row.get("workload") == workload and row.get("container") == container:
            return dict(row)
    if "optedIn" in listed and not listed.get("unlisted"):
        return {"state": "UpToDate", "reason": "not among the workloads needing attention"}
    return {}


def build(
    ref: WorkloadRef,
    obj: Mapping[str, Any],
    policies: Sequence[tuple[PolicySpec, Mapping[str, Any]]],
) -> dict[str, Any]:
    """The ``WorkloadLineage`` document.

    ``policies`` are the (parsed spec, body) of every ImagePolicy that selects the workload;
    normally exactly one. A container no policy governs is listed with ``policy: ""``.
    """
    state = WorkloadState.decode(obj)
    workload = str(ref)
    rows = []
    for name, image in containers(obj).items():
        governing = next(
            ((spec, body) for spec, body in policies if name in governed_containers(obj, spec)),
            None,
        )
        row: dict[str, Any] = {
            "name": name,
            "image": image,
            "policy": "",
            "tag": str(state.tags.get(name, "")),
            "digest": "",
            "baseDigest": "",
            "currentBaseDigest": "",
            "onCurrentBase": None,
            "state": "NotGoverned",
            "reason": "no ImagePolicy governs this container",
            "candidate": None,
            "history": [],
        }
        if governing is not None:
            spec, body = governing
            status = body.get("status") or {}
            item = _item(obj, status, workload, name, spec.name)
            current = str((status.get("base") or {}).get("digest", ""))
            base_digest = str(item.get("baseDigest", ""))
            rollout = state.rollout
            if not base_digest and rollout and rollout.target.get(name) == image:
                base_digest = rollout.base_digest  # rolled by us: its record names the base
            row.update(
                policy=spec.name,
                digest=str(item.get("digest", "")) or image.partition("@")[2],
                baseDigest=base_digest,
                currentBaseDigest=current,
                onCurrentBase=(base_digest == current) if base_digest and current else None,
                state=str(item.get("state", "")) or "NotChecked",
                reason=str(item.get("reason", ""))
                or "the policy has not checked this container yet",
                history=_history(status, workload, name),
            )
            if row["state"] != "UpToDate":
                row["candidate"] = _candidate(status, image)
        rows.append(row)
    return render.document(
        "WorkloadLineage",
        workload={
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "ref": workload,
        },
        policies=[spec.name for spec, _ in policies],
        paused=paused(obj),
        state=_state_doc(state),
        containers=rows,
    )


def table(doc: Mapping[str, Any], now: datetime, width: int = render.DEFAULT_WIDTH) -> str:
    wl = doc["workload"]
    ref = WorkloadRef(wl["kind"], wl["namespace"], wl["name"])
    head = describe(ref)
    head += "  policy " + (", ".join(doc["policies"]) or "none")
    if doc["paused"]:
        head += "  [paused]"
    blocks = [head]
    for c in doc["containers"]:
        on = {True: " (current)", False: " (old base)", None: ""}[c["onCurrentBase"]]
        pairs = [
            ("image", render.short_image(c["image"])),
            ("digest", render.short(c["digest"])),
            ("base digest", render.short(c["baseDigest"]) + on),
            ("state", c["state"]),
            ("why", c["reason"]),
        ]
        cand = c["candidate"]
        if cand:
            text = f"{cand['tag']}@{render.short(cand['digest'])}  {cand['verdict']}"
            if cand["reasons"]:
                text += " (" + "; ".join(cand["reasons"]) + ")"
            pairs.append(("candidate", text))
        text = f"container {c['name']}" + (f"  (tag {c['tag']})" if c["tag"] else "")
        text += "\n" + render.fields(pairs, width)
        if c["history"]:
            text += "\n  history (newest first): base -> app -> verdict -> rollout"
            for h in c["history"]:
                text += (
                    f"\n    {render.short(h['baseDigest'])} -> {h['tag'] or '?'}@"
                    f"{render.short(h['appDigest'])}  {h['verdict'] or '?'}  {h['result']}  "
                    + render.age(h["finishedAt"] or h["startedAt"], now)
                )
                detail = f"from {h['previousImage'] or '?'}"
                if h["reason"]:
                    detail += f": {h['reason']}"
                text += "\n" + render.wrap(detail, width, indent=6)
                commits = [f"commit {h['commit'][:12]}"] if h["commit"] else []
                if h["pullRequest"]:
                    commits.append(f"pull request {h['pullRequest']}")
                if h["rollbackCommit"]:
                    commits.append(f"rolled back by commit {h['rollbackCommit'][:12]}")
                if commits:
                    text += "\n" + render.wrap(", ".join(commits), width, indent=6)
        else:
            text += "\n  history: none recorded"
        blocks.append(text)
    rejected = doc["state"]["rejected"]
    if rejected:
        blocks.append(
            "rolled back here before, never retried: "
            + ", ".join(render.short(d) for d in rejected)
        )
    return "\n\n".join(blocks)

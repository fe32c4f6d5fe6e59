"""Opted-in workloads as plain values, and the state imagedrift keeps on them.

The state lives in one annotation on the workload itself, written in the same patch as the
image: a rollout is never patched without its record, and a restarted operator finds
exactly what it was doing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imagedrift.core.gitops_source import GitSource
from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout import Phase
from imagedrift.core.spec import PolicySpec
from imagedrift.errors import InvalidReference

STATE_ANNOTATION = "imagedrift.io/state"
STATUS_ANNOTATION = "imagedrift.io/status"  # what the policy last said of this workload
PAUSE_ANNOTATION = "imagedrift.io/paused"
CONTAINERS_ANNOTATION = "imagedrift.io/containers"
KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
MAX_REJECTED = 20


@dataclass(frozen=True, order=True)
class WorkloadRef:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.namespace}/{self.name}"


def pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template spec of any supported workload kind."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def containers(obj: Mapping[str, Any]) -> dict[str, str]:
    """container name -> image, init containers excluded (they rarely share the app's base)."""
    return {c["name"]: c.get("image", "") for c in pod_spec(obj).get("containers") or ()}


def ref_of(obj: Mapping[str, Any]) -> WorkloadRef:
    meta = obj.get("metadata") or {}
    return WorkloadRef(str(obj.get("kind")), str(meta.get("namespace")), str(meta.get("name")))


def selected(obj: Mapping[str, Any], policy: PolicySpec) -> bool:
    """Does ``policy`` govern this workload (selector and namespaces)?"""
    meta = obj.get("metadata") or {}
    if policy.rollout.namespaces and meta.get("namespace") not in policy.rollout.namespaces:
        return False
    return policy.rollout.selector.matches(meta.get("labels") or {})


def governed_containers(obj: Mapping[str, Any], policy: PolicySpec) -> dict[str, str]:
    """The containers imagedrift may change: the workload's annotation narrows the policy's list."""
    names = containers(obj)
    wanted = set(policy.rollout.containers)
    annotated = ((obj.get("metadata") or {}).get("annotations") or {}).get(
        CONTAINERS_ANNOTATION, ""
    )
    if annotated:
        own = {n.strip() for n in annotated.split(",") if n.strip()}
        wanted = wanted & own if wanted else own
    return {n: image for n, image in names.items() if not wanted or n in wanted}


def paused(obj: Mapping[str, Any]) -> bool:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(PAUSE_ANNOTATION, "")
    return value.lower() in ("true", "yes", "1")


@dataclass(frozen=True)
class GitRecord:
    """Where a rollout by commit went: the repository, branch and directory the GitOps
    controller reads, and imagedrift's commits there."""

    url: str
    branch: str
    path: str
    via: str  # the object that named the repository (a Flux Kustomization, ...)
    commit: str = ""  # the commit that set the target ("" the files already said so)
    rollback_commit: str = ""  # the commit that restored the previous images
    head: str = ""  # a pull request's branch (imagedrift's own); "" committed to ``branch``
    pull_request: str = ""  # its web URL

    def source(self) -> GitSource:
        """Where it went, for a write when the cluster no longer says (a rollback)."""
        return GitSource(self.url, self.branch, self.path, self.via)

    def encode(self) -> dict[str, str]:
        body = {"url": self.url, "branch": self.branch, "path": self.path, "via": self.via}
        optional = {
            "commit": self.commit,
            "rollbackCommit": self.rollback_commit,
            "head": self.head,
            "pullRequest": self.pull_request,
        }
        body.update({k: v for k, v in optional.items() if v})
        return body

    @classmethod
    def decode(cls, raw: Mapping[str, Any] | None) -> GitRecord | None:
        if not raw:
            return None
        return cls(
            str(raw["url"]),
            str(raw.get("branch", "")),
            str(raw.get("path", "")),
            str(raw.get("via", "")),
            str(raw.get("commit", "")),
            str(raw.get("rollbackCommit", "")),
            str(raw.get("head", "")),
            str(raw.get("pullRequest", "")),
        )


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout imagedrift made on this workload."""

    id: str  # "<base digest>|<app digest of the first container>"
    base_digest: str
    target: Mapping[str, str]  # container -> image pinned by digest
    previous: Mapping[str, str]  # container -> image before the patch
    tags: Mapping[str, str]  # container -> tag the target came from
    started_at: str
    phase: str  # core.rollout.Phase value
    reason: str = ""
    finished_at: str = ""
    policy: str = ""
    # container -> the digest it ran before the patch (what a rollback restores); empty in
    # records written before it was kept, and for a container whose digest was not known.
    previous_digests: Mapping[str, str] = field(default_factory=dict)
    # A rolled-back rollout's rollback, followed like any rollout from ``finished_at``:
    # a core.rollout.Phase value (Progressing, Complete, Failed); "" when nothing was
    # restored (every container changed meanwhile) or in records older than this field.
    rollback: str = ""
    rollback_reason: str = ""
    rollback_at: str = ""  # when its outcome was recorded
    # A rollout by commit (GitOps write-back): the template changes when the GitOps
    # controller applies the commit, not when imagedrift patches. None: patched in place.
    git: GitRecord | None = None

    def digests(self) -> dict[str, str]:
        """container -> the app digest this rollout put there: the one place that knows."""
        return {c: image.rpartition("@")[2] for c, image in self.target.items()}


@dataclass(frozen=True)
class WorkloadState:
    tags: Mapping[str, str] = field(default_factory=dict)  # container -> tag it runs
    rollout: RolloutRecord | None = None
    rejected: tuple[str, ...] = ()  # app digests rolled back here: never retried
    overridden: tuple[str, ...] = ()  # app digests someone replaced after we rolled them

    def encode(self) -> str:
        body: dict[str, Any] = {
            "tags": dict(self.tags),
            "rejected": list(self.rejected[-MAX_REJECTED:]),
        }
        if self.overridden:
            body["overridden"] = list(self.overridden[-MAX_REJECTED:])
        if self.rollout:
            r = self.rollout
            body["rollout"] = {
                "id": r.id,
                "baseDigest": r.base_digest,
                "target": dict(r.target),
                "previous": dict(r.previous),
                "tags": dict(r.tags),
                "startedAt": r.started_at,
                "phase": r.phase,
                "reason": r.reason,
                "finishedAt": r.finished_at,
                "policy": r.policy,
            }
            if r.previous_digests:
                body["rollout"]["previousDigests"] = dict(r.previous_digests)
            if r.git is not None:
                body["rollout"]["git"] = r.git.encode()
            if r.rollback:
                body["rollout"]["rollback"] = {
                    "phase": r.rollback,
                    "reason": r.rollback_reason,
                    "at": r.rollback_at,
                }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> WorkloadState:
        """Read the annotation; a missing or garbled one reads as "no state" (never raises)."""
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(STATE_ANNOTATION, "")
        try:
            body = json.loads(raw) if raw else {}
            r = body.get("rollout")
            rollout = (
                RolloutRecord(
                    id=r["id"],
                    base_digest=r["baseDigest"],
                    target=dict(r["target"]),
                    previous=dict(r["previous"]),
                    tags=dict(r.get("tags") or {}),
                    started_at=r["startedAt"],
                    phase=r["phase"],
                    reason=r.get("reason", ""),
                    finished_at=r.get("finishedAt", ""),
                    policy=r.get("policy", ""),
                    previous_digests=dict(r.get("previousDigests") or {}),
                    rollback=str((r.get("rollback") or {}).get("phase", "")),
                    rollback_reason=str((r.get("rollback") or {}).get("reason", "")),
                    rollback_at=str((r.get("rollback") or {}).get("at", "")),
                    git=GitRecord.decode(r.get("git")),
                )
                if r
                else None
            )
            return cls(
                dict(body.get("tags") or {}),
                rollout,
                tuple(body.get("rejected") or ()),
                tuple(body.get("overridden") or ()),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()


def rolling_back(record: RolloutRecord) -> bool:
    """Was ``record`` rolled back, and is that rollback not settled yet?"""
    return record.phase == Phase.ROLLED_BACK.value and record.rollback == Phase.PROGRESSING.value


def followed(record: RolloutRecord | None) -> bool:
    """Is a rollout of imagedrift's, or the rollback of one, still being followed?"""
    return record is not None and (record.phase == Phase.PROGRESSING.value or rolling_back(record))


def same_reference(a: str, b: str) -> bool:
    """Do two image references name the same image (as parsed; else as written)?"""
    try:
        return str(ImageRef.parse(a)) == str(ImageRef.parse(b))
    except InvalidReference:
        return a == b


def unapplied(record: RolloutRecord, images: Mapping[str, str]) -> tuple[str, ...]:
    """A rollout by commit: the containers whose pod template does not show imagedrift's
    last commit yet (still the previous image while rolling out, still the target while
    rolling back). Empty for a rollout patched in place."""
    if record.git is None:
        return ()
    if record.phase == Phase.PROGRESSING.value:
        old = record.previous
    elif rolling_back(record):
        old = record.target
    else:
        return ()
    return tuple(
        c
        for c in sorted(record.target)
        if c in images and c in old and same_reference(images[c], old[c])
    )


def rollback_images(
    record: RolloutRecord, now: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """What rolling ``record`` back writes: (container -> image to restore, container -> the
    image someone else set meanwhile, left alone).

    A container is restored only while it still runs imagedrift's target. It goes back to
    the digest it ran (``repo@digest``): the tag it came from may have been re-pushed since,
    and a rollback must land on exactly what ran, not on whatever the tag means today.
    Records without that digest fall back to the reference as it was written.
    """
    restore: dict[str, str] = {}
    superseded: dict[str, str] = {}
    for container, target in sorted(record.target.items()):
        current = now.get(container, target)
        if not same_reference(current, target):  # as parsed: git keeps a manifest's spelling
            superseded[container] = current
            continue
        previous = record.previous.get(container, "")
        digest = record.previous_digests.get(container, "")
        if not previous:
            continue
        restore[container] = previous
        if digest:
            # A previous reference that does not parse is restored as it was written.
            with contextlib.suppress(InvalidReference):
                restore[container] = str(ImageRef.parse(previous).with_digest(digest))
    return restore, superseded


def image_patch(
    kind: str, images: Mapping[str, str], state: WorkloadState, resource_version: str
) -> dict[str, Any]:
    """A strategic-merge patch that sets only ``images`` and the state annotation.

    ``resourceVersion`` makes it optimistic: if the workload changed since we read it, the
    API server answers 409 and we decide again instead of overwriting someone's edit.
    """
    template_spec: dict[str, Any] = {
        "containers": [{"name": n, "image": i} for n, i in sorted(images.items())]
    }
    body: dict[str, Any] = {"template": {"spec": template_spec}}
    if kind == "CronJob":
        body = {"jobTemplate": {"spec": body}}
    patch: dict[str, Any] = {
        "metadata": {
            "annotations": {STATE_ANNOTATION: state.encode()},
            "resourceVersion": resource_version,
        },
    }
    if images:
        patch["spec"] = body
    return patch


def status_annotation(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The workload's ``imagedrift.io/status``: ``{"policy", "containers": [row, ...]}``,
    each row as in ``status.workloads.items`` (container, image, digest, baseDigest, state,
    reason). Absent on a workload that was always up to date; garbled reads as absent."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(STATUS_ANNOTATION, "")
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

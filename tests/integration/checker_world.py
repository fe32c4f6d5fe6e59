"""An in-process world for characterizing ``PolicyChecker``: the real loopback registry,
a recording Kubernetes port, a fixed clock, and golden files.

``CheckerWorld`` publishes deterministic images to the harness registry, keeps workloads
as full API bodies in ``FakeKube`` (the checker sees them through the watch cache's own
projection, ``imagedrift.kube.informer.project``), plays the Deployment controller by
hand (``observed``, ``complete``, ``deadline``, ``undo``), and runs checks
the way ``Controller._process_policy`` does: the previous status goes in, ``result.status``
is merged over it and the conditions are merged with ``core.conditions.merge``.

Every check is recorded (status, conditions, Events, next check, counts, the candidate
searches, every patch sent and every smoke-test Job created) and normalised: the
registry's ``host:port`` becomes ``<registry>`` and each digest the world published gets
its name (``sha256:<app-1.0.1@v2>``; abbreviated ``sha256:<app-1.0.1@v2|12>``), so a
golden file reads like the scenario and does not depend on how ``registry.push`` encodes
images.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagedrift.core.conditions import merge, timestamp
from imagedrift.core.refs import ImageRef
from imagedrift.core.running import pod_selector
from imagedrift.core.sandbox import Sandbox
from imagedrift.core.spec import POLICY_LABEL, PolicySpec, parse_policy
from imagedrift.core.workloads import (
    STATE_ANNOTATION,
    STATUS_ANNOTATION,
    WorkloadRef,
    containers,
    ref_of,
    selected,
)
from imagedrift.engine.caches import BaseWatcher, ImageCache, TtlCache
from imagedrift.engine.check import CheckResult, PolicyChecker, Search
from imagedrift.engine.ports import Event
from imagedrift.engine.registries import RegistryPool
from imagedrift.errors import KubeConflict, KubeError
from imagedrift.kube.informer import project
from imagedrift.registry.oci import OciRegistryClient
from imagedrift.registry.push import Image, Index, Layer, base_marks, push

GOLDEN_DIR = Path(__file__).parent / "golden" / "checker"
UPDATE_ENV = "UPDATE_GOLDEN"
START = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
CLOCK_START = 10_000.0
NAMESPACE = "shop"
OPERATOR_NAMESPACE = "imagedrift-system"
MAX_CHECKS = 40  # per scenario: a runaway scenario fails instead of running on
_FULL = re.compile(r"sha256([:-])([0-9a-f]{64})")
_SHORT = re.compile(r"sha256:([0-9a-f]{12})(?![0-9a-f])")
_JOB_HEX = re.compile(r"(?<=-)([0-9a-f]{16})(?![0-9a-f])")
_JSON_ANNOTATIONS = (STATE_ANNOTATION, STATUS_ANNOTATION)


def layer(text: str) -> Layer:
    return Layer.from_files({"content.txt": text})


def base_image(patch: str) -> Image:
    """A small base image; ``patch`` changes its last layer (a re-publish with fixes)."""
    return Image(layers=(layer("os files"), layer(f"security fixes {patch}")))


# -- names for digests, and normalisation -------------------------------------------------------


class Names:
    """Digest -> a name from the scenario, and the normalisation of recorded values."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._by_hex: dict[str, str] = {}
        self._unknown = 0

    def name(self, digest: str, label: str) -> None:
        """Call ``digest`` ``label`` (the first name given to a digest stays)."""
        hexpart = digest.partition(":")[2]
        self._by_hex.setdefault(hexpart, label)

    def _label(self, hexpart: str) -> str:
        if hexpart not in self._by_hex:
            self._unknown += 1
            self._by_hex[hexpart] = f"unknown-{self._unknown}"
        return self._by_hex[hexpart]

    def _prefixed(self, prefix: str) -> str | None:
        found = {label for hexpart, label in self._by_hex.items() if hexpart.startswith(prefix)}
        return found.pop() if len(found) == 1 else None

    def text(self, value: str) -> str:
        value = value.replace(self.host, "<registry>")
        value = _FULL.sub(lambda m: f"sha256{m.group(1)}<{self._label(m.group(2))}>", value)

        def short(match: re.Match[str]) -> str:
            label = self._prefixed(match.group(1))
            return f"sha256:<{label}|12>" if label else match.group(0)

        def job(match: re.Match[str]) -> str:
            label = self._prefixed(match.group(1))
            return f"<{label}|16>" if label else match.group(0)

        return _JOB_HEX.sub(job, _SHORT.sub(short, value))

    def __call__(self, value: Any) -> Any:
        """``value`` (JSON-like) with hosts and digests replaced, at any depth."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


# -- the Kubernetes side -------------------------------------------------------------------------


def _strategic_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Enough of a strategic-merge patch for what imagedrift sends: maps merge, ``None``
    deletes, ``containers`` merge by name, other lists are replaced."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            current = target.get(key)
            if not isinstance(current, dict):
                current = target[key] = {}
            _strategic_merge(current, value)
        elif key == "containers" and isinstance(value, list):
            listed: list[dict[str, Any]] = target.setdefault("containers", [])
            for item in value:
                mine = next((c for c in listed if c.get("name") == item.get("name")), None)
                if mine is None:
                    listed.append(copy.deepcopy(dict(item)))
                else:
                    _strategic_merge(mine, item)
        else:
            target[key] = copy.deepcopy(value)


def _replica_set_hash(body: Mapping[str, Any]) -> str:
    """A stand-in for the pod-template hash in a ReplicaSet's name: stable across runs
    (the registry's port is left out), different per template."""
    images = {c: image.partition("/")[2] for c, image in containers(body).items()}
    return hashlib.sha256(json.dumps(images, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class _Owner:
    manager: str
    operation: str
    time: str


@dataclass
class _History:
    """What ``kubectl rollout undo`` restores: an earlier template and the annotations the
    Deployment had while it was current (its ReplicaSet kept them)."""

    images: dict[str, str]
    annotations: dict[str, str]


@dataclass
class FakeKube:
    """``KubePort`` + ``PodReader`` + ``ValidationKube`` over bodies held in memory.

    Every patch is recorded with its outcome. A patch carrying ``metadata.resourceVersion``
    is refused with ``KubeConflict`` when the body moved on (as the API server answers
    409); ``touch_before_next_patch`` makes that happen: another writer updates the
    workload just before imagedrift's next patch lands.
    """

    now: Callable[[], datetime]
    resolve: Callable[[str], str]  # image reference -> the digest a node pulls now
    namespace: str = OPERATOR_NAMESPACE
    sandbox: Sandbox = field(default_factory=Sandbox)
    bodies: dict[WorkloadRef, dict[str, Any]] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)  # this check's patches
    jobs_created: list[dict[str, Any]] = field(default_factory=list)  # this check's Jobs
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    job_results: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> result
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # digest -> VRs
    pulled: dict[tuple[WorkloadRef, str], str] = field(default_factory=dict)
    owners: dict[WorkloadRef, dict[str, _Owner]] = field(default_factory=dict)
    history: dict[WorkloadRef, list[_History]] = field(default_factory=dict)
    touch: set[WorkloadRef] = field(default_factory=set)
    _version: int = 100

    # -- bookkeeping ---------------------------------------------------------------------------

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def _own(self, ref: WorkloadRef, images: Iterable[str], manager: str) -> None:
        mine = self.owners.setdefault(ref, {})
        for container in images:
            mine[container] = _Owner(manager, "Update", timestamp(self.now()))
        entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        for container, owner in sorted(mine.items()):
            key = (owner.manager, owner.operation, owner.time)
            entry = entries.setdefault(
                key,
                {
                    "manager": owner.manager,
                    "operation": owner.operation,
                    "apiVersion": "apps/v1",
                    "time": owner.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}},
                },
            )
            fields = entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            fields[f'k:{{"name":"{container}"}}'] = {".": {}, "f:image": {}, "f:name": {}}
        self.bodies[ref]["metadata"]["managedFields"] = [
            entries[k] for k in sorted(entries, key=lambda k: k[2])
        ]

    def _pull(self, ref: WorkloadRef) -> None:
        """The pods run the template now: record the digest each container's node pulled."""
        for container, image in containers(self.bodies[ref]).items():
            self.pulled[ref, container] = self.resolve(image)

    def add(self, body: dict[str, Any], manager: str) -> WorkloadRef:
        ref = ref_of(body)
        body["metadata"]["resourceVersion"] = self._next_version()
        self.bodies[ref] = body
        self._own(ref, containers(body), manager)
        self.complete(ref)
        return ref

    def projected(self) -> list[dict[str, Any]]:
        """What the watch cache holds: every body, projected as the informer does."""
        return [project(str(b["kind"]), b) for _, b in sorted(self.bodies.items())]

    # -- the Deployment controller, played by hand --------------------------------------------

    def _status(self, ref: WorkloadRef, updated: int, extra: Mapping[str, Any]) -> None:
        body = self.bodies[ref]
        want = int(body["spec"].get("replicas", 1))
        body["status"] = {
            "observedGeneration": body["metadata"]["generation"],
            "replicas": want,
            "updatedReplicas": updated,
            "readyReplicas": want,
            "availableReplicas": want,
            **extra,
        }
        body["metadata"]["resourceVersion"] = self._next_version()

    def observed(self, ref: WorkloadRef, updated: int = 0) -> None:
        """The controller saw the new template; ``updated`` replicas run it so far."""
        name = f"{ref.name}-{_replica_set_hash(self.bodies[ref])}"
        progressing = {
            "type": "Progressing",
            "status": "True",
            "reason": "ReplicaSetUpdated",
            "message": f'ReplicaSet "{name}" is progressing.',
            "lastUpdateTime": timestamp(self.now()),
        }
        self._status(ref, updated, {"conditions": [progressing]})

    def complete(self, ref: WorkloadRef) -> None:
        """Every replica runs the template and is available."""
        body = self.bodies[ref]
        name = f"{ref.name}-{_replica_set_hash(body)}"
        want = int(body["spec"].get("replicas", 1))
        conditions = [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
                "lastUpdateTime": timestamp(self.now()),
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}" has successfully progressed.',
                "lastUpdateTime": timestamp(self.now()),
            },
        ]
        self._status(ref, want, {"conditions": conditions})
        self._pull(ref)

    def deadline(self, ref: WorkloadRef) -> None:
        """The controller gave up: ``ProgressDeadlineExceeded``, stamped now."""
        name = f"{ref.name}-{_replica_set_hash(self.bodies[ref])}"
        condition = {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": f'ReplicaSet "{name}" has timed out progressing.',
            "lastUpdateTime": timestamp(self.now()),
        }
        self._status(ref, 0, {"conditions": [condition]})

    def undo(self, ref: WorkloadRef) -> None:
        """``kubectl rollout undo``: the previous template back, and with it the annotations
        its ReplicaSet kept (imagedrift's record of the newer rollout goes)."""
        previous = self.history[ref][-1]
        current = self.bodies[ref]["metadata"].get("annotations") or {}
        annotations: dict[str, str | None] = {
            k: None for k in current if k.startswith("imagedrift.io/")
        }
        annotations.update(
            {k: v for k, v in previous.annotations.items() if k.startswith("imagedrift.io/")}
        )
        self.patch_as(
            ref,
            {
                "metadata": {"annotations": annotations},
                "spec": {"template": {"spec": {"containers": _rows(previous.images)}}},
            },
            "kubectl-rollout",
        )

    def annotate(self, ref: WorkloadRef, annotations: Mapping[str, str | None]) -> None:
        self.patch_as(ref, {"metadata": {"annotations": dict(annotations)}}, "kubectl-annotate")

    def patch_as(self, ref: WorkloadRef, patch: Mapping[str, Any], manager: str) -> None:
        """A write by someone else than imagedrift (not recorded as imagedrift's)."""
        self._apply(ref, patch, manager)

    # -- KubePort --------------------------------------------------------------------------

    def get_workload(self, ref: WorkloadRef) -> dict[str, Any] | None:
        body = self.bodies.get(ref)
        return copy.deepcopy(body) if body is not None else None

    def patch_workload(self, ref: WorkloadRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {"workload": str(ref), "patch": copy.deepcopy(dict(patch))}
        self.sent.append(record)
        if ref not in self.bodies:
            record["outcome"] = "404"
            raise KubeError(f"patching {ref}: 404 Not Found")
        if ref in self.touch:
            self.touch.discard(ref)
            self.annotate(ref, {"example.com/touched": "by another writer"})
        wanted = str((patch.get("metadata") or {}).get("resourceVersion") or "")
        current = str(self.bodies[ref]["metadata"]["resourceVersion"])
        if wanted and wanted != current:
            record["outcome"] = "409"
            raise KubeConflict(f"{ref} changed since it was read")
        record["outcome"] = "applied"
        return self._apply(ref, patch, "imagedrift")

    def _apply(self, ref: WorkloadRef, patch: Mapping[str, Any], manager: str) -> dict[str, Any]:
        body = self.bodies[ref]
        before = copy.deepcopy(body)
        change: dict[str, Any] = copy.deepcopy(dict(patch))
        meta = dict(change.get("metadata") or {})
        meta.pop("resourceVersion", None)  # a precondition, not a change
        change["metadata"] = meta
        _strategic_merge(body, change)
        changed = [c for c, image in containers(body).items() if containers(before).get(c) != image]
        template_changed = bool(changed)
        if template_changed:
            self.history.setdefault(ref, []).append(
                _History(containers(before), dict(before["metadata"].get("annotations") or {}))
            )
            self._own(ref, changed, manager)
        annotations_changed = before["metadata"].get("annotations") != body["metadata"].get(
            "annotations"
        )
        if body["spec"] != before["spec"] or annotations_changed:
            # Deployments count annotation changes as a new generation too.
            body["metadata"]["generation"] = int(body["metadata"]["generation"]) + 1
            status = body.get("status") or {}
            caught_up = status.get("observedGeneration") == before["metadata"]["generation"]
            if not template_changed and caught_up:
                status["observedGeneration"] = body["metadata"]["generation"]
        body["metadata"]["resourceVersion"] = self._next_version()
        return copy.deepcopy(body)

    # -- PodReader -------------------------------------------------------------------------

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = []
        for ref, body in sorted(self.bodies.items()):
            if ref.namespace != namespace or pod_selector(body) != selector:
                continue
            replicas = int((body.get("status") or {}).get("replicas") or 0)
            images = containers(body)
            for i in range(replicas):
                statuses = [
                    {
                        "name": c,
                        "image": image,
                        "imageID": f"{ImageRef.parse(image).name}@{self.pulled[ref, c]}",
                    }
                    for c, image in sorted(images.items())
                    if self.pulled.get((ref, c))
                ]
                pods.append(
                    {
                        "metadata": {"name": f"{ref.name}-{i}", "namespace": namespace},
                        "status": {"containerStatuses": statuses},
                    }
                )
        return pods

    # -- ValidationKube --------------------------------------------------------------------

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body["metadata"]["name"])
        if (namespace, name) in self.jobs:
            raise KubeConflict(f"job {namespace}/{name} exists")
        job = copy.deepcopy(dict(body))
        job["metadata"]["namespace"] = namespace
        self.jobs[namespace, name] = job
        self.jobs_created.append(job)
        return copy.deepcopy(job)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, name))
        if job is None:
            return None
        result, message = self.job_results.get(name, ("Running", ""))
        conditions = (
            [{"type": result, "status": "True", "message": message}]
            if result in ("Complete", "Failed")
            else []
        )
        return {**copy.deepcopy(job), "status": {"conditions": conditions}}

    def list_vulnerability_reports(self, digest: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.reports.get(digest, []))


def _rows(images: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "image": i} for n, i in sorted(images.items())]


class NoSecrets:
    def read_secret(self, name: str) -> dict[str, bytes] | None:
        return None


# -- recording ---------------------------------------------------------------------------------


def _target(event: Event) -> str:
    meta = event.target.get("metadata") or {}
    parts = [str(event.target.get("kind", "")), str(meta.get("namespace") or ""), meta["name"]]
    return "/".join(p for p in parts if p)


def _annotation_values(patch: dict[str, Any]) -> dict[str, Any]:
    """The patch with imagedrift's JSON annotations decoded (and whether each was written
    in its canonical form: sorted keys, no spaces)."""
    out = copy.deepcopy(patch)
    annotations = (out.get("metadata") or {}).get("annotations") or {}
    for key in _JSON_ANNOTATIONS:
        raw = annotations.get(key)
        if isinstance(raw, str):
            decoded = json.loads(raw)
            canonical = json.dumps(decoded, sort_keys=True, separators=(",", ":")) == raw
            annotations[key] = {"json": decoded, "canonical": canonical}
    return out


def _search(search: Search) -> dict[str, Any]:
    candidate = search.candidate
    return {
        "policy": search.policy,
        "refused": search.refused,
        "rejected": list(search.rejected),
        "notes": [[n.tag, n.fate, n.reason] for n in search.notes],
        "candidate": None
        if candidate is None
        else {
            "ref": str(candidate.ref),
            "tag": candidate.tag,
            "lineage": {
                "baseDigest": candidate.lineage.base_digest,
                "source": str(candidate.lineage.source),
                "reason": candidate.lineage.reason,
            },
            "verdict": {
                "passed": candidate.verdict.passed,
                "pending": candidate.verdict.pending,
                "reasons": list(candidate.verdict.reasons),
            },
        },
    }


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch from ``old`` to ``new`` (a check's status change)."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return copy.deepcopy(new)
    out: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        out[key] = merge_patch(old[key], value) if key in old else copy.deepcopy(value)
    return out


def apply_merge_patch(old: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(copy.deepcopy(old)) if isinstance(old, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def _plain(value: Any) -> Any:
    """JSON-like data as JSON reads it back (tuples become lists, StrEnums strings)."""
    return json.loads(json.dumps(value))


# -- the world -----------------------------------------------------------------------------------


class CheckerWorld:
    """One scenario: its images, workloads, the policy, and every check it ran."""

    def __init__(self, host: str, client: OciRegistryClient, scenario: str) -> None:
        self.host = host
        self.client = client
        self.scenario = scenario
        self.names = Names(host)
        self.now = START
        self.clock = CLOCK_START
        self.kube = FakeKube(lambda: self.now, self.resolve)
        self.pool = RegistryPool(NoSecrets(), namespace=OPERATOR_NAMESPACE, verify=True)
        # The caches the checker is given, as the wiring gives them to the controller too.
        self.bases = BaseWatcher(clock=lambda: self.clock)
        self.searches = TtlCache(clock=lambda: self.clock)
        self.checker = PolicyChecker(self.pool, self.kube, ImageCache(), self.bases, self.searches)
        self.policy_name = "chk-" + scenario.replace("_", "-")
        self.raw_spec: dict[str, Any] = {}
        self.spec: PolicySpec | None = None
        self.generation = 0
        self.status: dict[str, Any] = {}
        self.conflicts: dict[str, tuple[str, ...]] = {}
        self.steps: list[dict[str, Any]] = []
        self.specs: list[dict[str, Any]] = []
        self.results: list[CheckResult] = []
        self._actions: list[str] = []
        self._last_status: dict[str, Any] | None = None

    def close(self) -> None:
        self.pool.close()

    # -- images -----------------------------------------------------------------------------

    def repo(self, name: str) -> str:
        return f"chk/{self.scenario.replace('_', '-')}/{name}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{self.repo(name)}"

    def app_on(self, base: Image, marker: str, *, base_tag: str = "1") -> Image:
        """An app image built FROM ``base``, annotated with the base's digest and name
        (the name without the registry host, so that digests do not depend on the port)."""
        marks = base_marks(base.digest, f"{self.repo('base')}:{base_tag}")
        return base.derive(layer(f"app {marker}"), annotations=marks)

    def publish(
        self, name: str, tag: str, artifact: Image | Index, label: str, *, push_event: bool = True
    ) -> str:
        """Push ``artifact`` as ``name:tag``; its digest is called ``label`` in the goldens.

        ``push_event``: what the push receiver does for it (``Controller.wake_for_image``):
        a push of the base invalidates the base lookup, any push the cached searches of
        its repository.
        """
        digest = push(self.client, self.repo(name), artifact, tag)
        self.names.name(digest, label)
        if isinstance(artifact, Index):
            for image in artifact.images:
                self.names.name(image.digest, f"{label}/{image.platform}")
        self.note(f"published {name}:{tag} = {label}")
        if push_event:
            self.push_event(f"{self.ref(name)}:{tag}")
        return digest

    def push_event(self, image: str) -> None:
        pushed = ImageRef.parse(image)
        if self.spec is not None:
            base = self.spec.base
            if pushed.name == base.image.name and (
                not pushed.tag or not base.tag or pushed.tag == base.tag
            ):
                self.bases.invalidate(base.key)
        self.searches.invalidate(pushed.name)

    def resolve(self, image: str) -> str:
        ref = ImageRef.parse(image)
        return ref.digest or self.client.resolve_digest(ref)

    def pinned(self, name: str, digest: str) -> str:
        return f"{self.ref(name)}@{digest}"

    # -- the policy ---------------------------------------------------------------------------

    def policy(self, spec: Mapping[str, Any]) -> PolicySpec:
        """Create the policy, or change its spec (a new generation)."""
        self.raw_spec = copy.deepcopy(dict(spec))
        self.spec = parse_policy(self.policy_name, self.raw_spec)
        self.generation += 1
        self.specs.append({"generation": self.generation, "spec": copy.deepcopy(self.raw_spec)})
        if self.generation > 1:
            self.note(f"policy spec changed (generation {self.generation})")
        return self.spec

    def base_spec(self, **extra: Any) -> dict[str, Any]:
        return {"image": self.ref("base"), "tag": "1", "interval": "1m", "insecure": True, **extra}

    # -- workloads ----------------------------------------------------------------------------

    def deployment(
        self,
        name: str,
        images: Mapping[str, str] | str,
        *,
        replicas: int = 2,
        policy: str | None = "",
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> WorkloadRef:
        """A Deployment, created and rolled out (its pods pulled what its tags meant now).
        ``policy``: the policy label's value ("" this scenario's policy, None no label)."""
        rows = {"app": images} if isinstance(images, str) else dict(images)
        all_labels = {"app": name, **dict(labels or {})}
        if policy is not None:
            all_labels[POLICY_LABEL] = policy or self.policy_name
        body: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": f"uid-{name}",
                "generation": 1,
                "labels": all_labels,
                "annotations": dict(annotations or {}),
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": _rows(rows)},
                },
            },
        }
        ref = self.kube.add(body, "kubectl-client-side-apply")
        self.note(f"created {ref} ({', '.join(f'{c}={i}' for c, i in sorted(rows.items()))})")
        return ref

    def workload(self, name: str) -> WorkloadRef:
        return WorkloadRef("Deployment", NAMESPACE, name)

    def images_of(self, name: str) -> dict[str, str]:
        return containers(self.kube.bodies[self.workload(name)])

    def annotations_of(self, name: str) -> dict[str, str]:
        meta = self.kube.bodies[self.workload(name)]["metadata"]
        return dict(meta.get("annotations") or {})

    def observed(self, name: str, updated: int = 0) -> None:
        self.kube.observed(self.workload(name), updated)
        self.note(f"{name}: the controller observed the new template ({updated} updated)")

    def complete(self, name: str) -> None:
        self.kube.complete(self.workload(name))
        self.note(f"{name}: rollout complete")

    def deadline(self, name: str) -> None:
        self.kube.deadline(self.workload(name))
        self.note(f"{name}: ProgressDeadlineExceeded")

    def undo(self, name: str) -> None:
        self.kube.undo(self.workload(name))
        self.kube.complete(self.workload(name))
        self.note(f"{name}: kubectl rollout undo (and it rolled out)")

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> None:
        self.kube.annotate(self.workload(name), annotations)
        self.note(f"{name}: annotated {dict(annotations)}")

    def touch_before_next_patch(self, name: str) -> None:
        self.kube.touch.add(self.workload(name))
        self.note(f"{name}: another writer updates it just before imagedrift's next patch")

    # -- time and checks --------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.clock += seconds

    def note(self, text: str) -> None:
        self._actions.append(text)

    def body(self) -> dict[str, Any]:
        """The ImagePolicy as the controller hands it to the check."""
        return {
            "apiVersion": "imagedrift.io/v1alpha1",
            "kind": "ImagePolicy",
            "metadata": {"name": self.policy_name, "generation": self.generation},
            "spec": copy.deepcopy(self.raw_spec),
            "status": copy.deepcopy(self.status),
        }

    def check(self, label: str, *, advance: float = 0.0) -> CheckResult:
        """Advance the time by ``advance`` seconds, run one check and record it."""
        assert self.spec is not None, "declare the policy first"
        assert len(self.steps) < MAX_CHECKS, "too many checks in one scenario"
        self.advance(advance)
        spec = self.spec
        body = self.body()
        previous = dict(body["status"])
        workloads = [w for w in self.kube.projected() if selected(w, spec)]
        self.kube.sent, self.kube.jobs_created = [], []
        result = self.checker.check(
            spec, body, workloads, self.now, self.clock, conflicts=dict(self.conflicts)
        )
        # As Controller._process_policy composes what it writes.
        status = {**previous, **result.status}
        status["conditions"] = merge(
            list(previous.get("conditions") or []), result.conditions, self.generation, self.now
        )
        self.status = _plain(status)
        self.results.append(result)
        self.steps.append(self._record(label, result))
        return result

    def _record(self, label: str, result: CheckResult) -> dict[str, Any]:
        status = _plain(result.status)
        step: dict[str, Any] = {
            "check": len(self.steps) + 1,
            "label": label,
            "at": timestamp(self.now),
            "generation": self.generation,
            "before": self._actions,
            "conditions": [
                {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                for c in result.conditions
            ],
            "events": [
                {"type": e.type, "reason": e.reason, "message": e.message, "target": _target(e)}
                for e in result.events
            ],
            "nextCheckIn": result.next_check_in,
            "counts": dict(result.counts),
            "patches": [
                {**p, "patch": _annotation_values(p["patch"])} for p in _plain(self.kube.sent)
            ],
            "jobsCreated": [
                {
                    "namespace": j["metadata"]["namespace"],
                    "name": j["metadata"]["name"],
                    "images": [
                        c.get("image", "") for c in j["spec"]["template"]["spec"]["containers"]
                    ],
                }
                for j in self.kube.jobs_created
            ],
            "searches": {
                f"{repo}:{tag}": _search(search)
                for (repo, tag), search in sorted(result.tags.items())
            },
        }
        if self._last_status is None:
            step["status"] = status
        else:
            change = merge_patch(self._last_status, status)
            assert apply_merge_patch(self._last_status, change) == status, "status has nulls"
            step["statusChange"] = change
        self._last_status = status
        self._actions = []
        return step

    def patches(self) -> list[dict[str, Any]]:
        return [p for step in self.steps for p in step["patches"]]

    def document(self, description: str) -> dict[str, Any]:
        """The scenario's golden document, normalised."""
        document: dict[str, Any] = _plain(
            self.names(
                {
                    "scenario": self.scenario,
                    "description": description,
                    "policy": self.policy_name,
                    "specs": self.specs,
                    "totals": {
                        "checks": len(self.steps),
                        "patches": len(self.patches()),
                        "patchesApplied": sum(
                            1 for p in self.patches() if p["outcome"] == "applied"
                        ),
                        "events": sum(len(s["events"]) for s in self.steps),
                    },
                    "checks": self.steps,
                }
            )
        )
        return document


# -- golden files ----------------------------------------------------------------------------------


def compare_with_golden(name: str, document: Mapping[str, Any]) -> None:
    """Compare ``document`` with ``golden/checker/<name>.json``; with ``UPDATE_GOLDEN=1``
    in the environment, (re)write the file instead."""
    path = GOLDEN_DIR / f"{name}.json"
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get(UPDATE_ENV) == "1":
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        raise AssertionError(f"no golden file {path.name}: run once with {UPDATE_ENV}=1")
    expected = path.read_text(encoding="utf-8")
    if expected == text:
        return
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"golden/checker/{path.name}",
            "this run",
            n=4,
        )
    )
    limit = 12_000
    shown = diff if len(diff) <= limit else diff[:limit] + "\n... (diff cut short)\n"
    raise AssertionError(
        f"PolicyChecker behaved differently in scenario {name!r} "
        f"(if the change is intended, rerun with {UPDATE_ENV}=1 and review the diff):\n{shown}"
    )

"""The policies this replica knows, each parsed once, and which workloads carry whose label.

The controller asks it who follows a base, who selects a workload, who else claims one
(a conflict: neither acts) and whose workloads run a pushed repository. It keeps its own
lock; the controller may call it while holding its own, never the other way round.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import POLICY_LABEL, PolicySpec, parse_policy
from imagedrift.core.workloads import WorkloadRef, containers, ref_of, selected
from imagedrift.errors import InvalidSpec


@dataclass
class KnownPolicy:
    body: dict[str, Any]
    spec: PolicySpec | None  # None: the spec is invalid (``error`` says why)
    error: str = ""


@dataclass(frozen=True)
class SpecChange:
    """A policy that is new or whose spec changed: what it and the others must do."""

    name: str
    spec: PolicySpec | None
    overlapping: list[str]  # policies to look again: every one, if this one may overlap them


class PolicyIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._policies: dict[str, KnownPolicy] = {}
        self._labelled: dict[str, set[WorkloadRef]] = {}  # policy label value -> workloads
        # Valid policies that select by more than their own label: the only ones a workload
        # must be matched against one by one (the others are found by its label's value;
        # 10,000 workloads listed against 1,000 policies were 10 million matches).
        self._custom: set[str] = set()

    def put(self, body: Mapping[str, Any]) -> SpecChange | None:
        """Keep a listed, added or changed policy. None when its spec is unchanged (a
        status-only change just replaces the body kept)."""
        name = str((body.get("metadata") or {}).get("name", ""))
        plain = {
            "apiVersion": body.get("apiVersion", ""),
            "kind": body.get("kind", "ImagePolicy"),
            # managedFields are the bulk of the metadata and nothing reads them.
            "metadata": {
                k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"
            },
            "spec": dict(body.get("spec") or {}),
            "status": dict(body.get("status") or {}),
        }
        with self._lock:
            before = self._policies.get(name)
            changed = before is None or before.body["spec"] != plain["spec"]
            if not changed:
                before.body = plain  # type: ignore[union-attr]
                return None
            try:
                spec: PolicySpec | None = parse_policy(name, plain["spec"])
                error = ""
            except InvalidSpec as exc:
                spec, error = None, str(exc)
            self._policies[name] = KnownPolicy(plain, spec, error)
            self._custom.discard(name)
            if spec is not None and not by_own_label(spec):
                self._custom.add(name)
            # A policy selecting by more than its own label may overlap others: they all
            # look again (Conflict is decided on both sides).
            others = list(self._policies) if spec is not None and not by_own_label(spec) else []
        return SpecChange(name, spec, others)

    def forget(self, name: str) -> None:
        with self._lock:
            self._policies.pop(name, None)
            self._custom.discard(name)

    def get(self, name: str) -> KnownPolicy | None:
        with self._lock:
            return self._policies.get(name)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._policies

    def specs(self) -> list[tuple[str, PolicySpec | None]]:
        """Every policy by name, with its spec (None when invalid)."""
        with self._lock:
            return [(n, p.spec) for n, p in self._policies.items()]

    def valid(self) -> list[tuple[str, PolicySpec]]:
        """Every policy whose spec is valid."""
        with self._lock:
            return [(n, p.spec) for n, p in self._policies.items() if p.spec is not None]

    def following(self, base_key: str) -> list[tuple[str, PolicySpec]]:
        """The policies whose base lookup is ``base_key``."""
        with self._lock:
            return [
                (n, p.spec)
                for n, p in self._policies.items()
                if p.spec is not None and p.spec.base.key == base_key
            ]

    def reindex(
        self, ref: WorkloadRef, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> set[str]:
        """Re-index a workload that changed; the policies that select it, before or after."""
        labels = [((body.get("metadata") or {}).get("labels") or {}) for body in (old, new) if body]
        with self._lock:
            for body_labels in labels:
                value = body_labels.get(POLICY_LABEL)
                if value:
                    self._labelled.setdefault(value, set()).discard(ref)
            if new is not None:
                value = ((new.get("metadata") or {}).get("labels") or {}).get(POLICY_LABEL)
                if value:
                    self._labelled.setdefault(value, set()).add(ref)
            names = {str(lb.get(POLICY_LABEL)) for lb in labels if lb.get(POLICY_LABEL)}
            candidates = [self._policies.get(n) for n in names] + [
                self._policies[n] for n in self._custom
            ]
            return {
                p.spec.name
                for p in candidates
                if p is not None
                and p.spec is not None
                and any(p.spec.rollout.selector.matches(lb) for lb in labels)
            }

    def labelled(self, name: str) -> list[WorkloadRef]:
        """The workloads whose policy label names ``name``."""
        with self._lock:
            return list(self._labelled.get(name, ()))

    def selecting(self, body: Mapping[str, Any]) -> list[str]:
        """The policies that select the workload ``body``."""
        label = ((body.get("metadata") or {}).get("labels") or {}).get(POLICY_LABEL, "")
        with self._lock:
            names = sorted({*([label] if label in self._policies else []), *self._custom})
            specs = [self._policies[n].spec for n in names]
        return [s.name for s in specs if s is not None and selected(body, s)]

    def running(self, pushed: ImageRef, bodies: Iterable[Mapping[str, Any]]) -> set[str]:
        """The policies selecting a workload (of ``bodies``) that runs ``pushed``'s repository."""
        names: set[str] = set()
        for body in bodies:
            for image in containers(body).values():
                try:
                    ref = ImageRef.parse(image)
                except ValueError:
                    continue
                if ref.repository == pushed.repository and ref.registry == pushed.registry:
                    names.update(self.selecting(body))
        return names

    def conflicts(
        self, spec: PolicySpec, workloads: Iterable[Mapping[str, Any]]
    ) -> dict[str, tuple[str, ...]]:
        """workload -> the other policies that select it too (two owners: neither acts)."""
        with self._lock:
            specs = {n: p.spec for n, p in self._policies.items() if p.spec is not None}
        custom = [s for n, s in specs.items() if n != spec.name and not by_own_label(s)]
        out: dict[str, tuple[str, ...]] = {}
        for body in workloads:
            label = ((body.get("metadata") or {}).get("labels") or {}).get(POLICY_LABEL, "")
            others = [s.name for s in custom if selected(body, s)]
            owner = specs.get(label)
            if owner is not None and owner.name != spec.name and selected(body, owner):
                others.append(owner.name)
            if others:
                out[str(ref_of(body))] = tuple(sorted(set(others)))
        return out


def by_own_label(spec: PolicySpec) -> bool:
    """Does ``spec`` select by its own name in the policy label (the common case)?"""
    selector = spec.rollout.selector
    return selector.match_labels == {POLICY_LABEL: spec.name} and not selector.match_expressions

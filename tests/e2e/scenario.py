"""Building blocks of end-to-end scenarios: publish images, opt workloads in, declare
policies, and wait (bounded) for what a user would see."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import V1Deployment
from kubernetes.client.exceptions import ApiException

from imagedrift.core.images import Platform
from imagedrift.registry.oci import OciRegistryClient
from imagedrift.registry.push import Image, Index, Layer, base_marks, push
from tests.harness.controlplane import Kube
from tests.harness.procs import wait_for

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"


def layer(text: str) -> Layer:
    return Layer.from_files({"content.txt": text})


def base_image(patch: str, platform: Platform | None = None) -> Image:
    """A small base image; ``patch`` changes its last layer (a re-publish with fixes)."""
    layers = (layer("os files"), layer(f"security fixes {patch}"))
    return Image(layers=layers) if platform is None else Image(layers=layers, platform=platform)


@dataclass
class World:
    """One test's images, workloads and policies; names are unique per test."""

    host: str
    client: OciRegistryClient
    kube: Kube
    namespace: str
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    policies: list[str] = field(default_factory=list)

    def repo(self, name: str) -> str:
        return f"e2e/{name}-{self.suffix}"

    def ref(self, name: str) -> str:
        return f"{self.host}/{self.repo(name)}"

    def publish(self, name: str, tag: str, artifact: Image | Index) -> str:
        return push(self.client, self.repo(name), artifact, tag)

    def app_on(
        self,
        base: Image | Index,
        marker: str,
        *,
        annotate: str = "annotation",
        base_name: str | None = None,
    ) -> Image | Index:
        """An app image built FROM ``base``: annotated, labelled, or bare (layer matching)."""
        own = layer(f"app {marker}")
        marks = base_marks(
            base.digest, base_name if base_name is not None else f"{self.ref('base')}:1"
        )
        if annotate == "annotation":
            return base.derive(own, annotations=marks)
        if annotate == "label":
            return base.derive(own, labels=marks)
        return base.derive(own)

    # -- Kubernetes objects ----------------------------------------------------------------

    def deployment(
        self,
        name: str,
        image: str,
        *,
        policy: str | None,
        replicas: int = 2,
        extra: Mapping[str, Any] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        labels = {"app": name}
        if policy:
            labels["imagedrift.io/policy"] = policy
        body: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels, "annotations": dict(annotations or {})},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": image}]},
                },
                **dict(extra or {}),
            },
        }
        # What the client's argument validation makes of the dict, made explicitly.
        self.kube.apps.create_namespaced_deployment(
            self.namespace, V1Deployment.model_validate(body)
        )

    def get_deployment(self, name: str) -> dict[str, Any]:
        return dict(
            self.kube.api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
                self.kube.apps.read_namespaced_deployment(name, self.namespace)
            )
        )

    def image_of(self, name: str) -> str:
        return str(self.get_deployment(name)["spec"]["template"]["spec"]["containers"][0]["image"])

    def policy(self, name: str, spec: Mapping[str, Any]) -> str:
        full = f"{name}-{self.suffix}"
        # kwok's pods never crash, so the settling window (default 30s) would only add
        # time to every rollout here; the tests on the real node, where containers crash,
        # keep the default or set their own.
        rollout = {"settleTime": "1s", **dict(spec.get("rollout") or {})}
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ImagePolicy",
            "metadata": {"name": full},
            "spec": {**dict(spec), "rollout": rollout},
        }
        self.kube.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
        self.policies.append(full)
        return full

    def get_policy(self, name: str) -> dict[str, Any]:
        body = self.kube.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert isinstance(body, dict), body
        return dict(body)

    def condition(self, policy: str, kind: str = "Ready") -> dict[str, Any]:
        for cond in (self.get_policy(policy).get("status") or {}).get("conditions") or []:
            if cond.get("type") == kind:
                return dict(cond)
        return {}

    def wait_policy(
        self, policy: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60
    ) -> dict[str, Any]:
        return wait_for(
            lambda: (lambda p: p if check(p) else None)(self.get_policy(policy)),
            what=f"policy {policy}: {what}",
            timeout=timeout,
            interval=0.5,
        )

    def wait_ready(
        self, policy: str, status: str = "True", reason: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def ok(body: dict[str, Any]) -> bool:
            conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
            ready = conds.get("Ready") or {}
            return ready.get("status") == status and (
                reason is None or ready.get("reason") == reason
            )

        return self.wait_policy(policy, ok, f"Ready={status} reason={reason}", timeout)

    def events(self, name: str, namespace: str | None = None) -> list[tuple[str, str, str]]:
        """(type, reason, message) of Events about object ``name``; a field the API server
        left out (it omits empty strings) reads as ``""``."""
        ns = namespace or self.namespace
        found = self.kube.core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name}"
        )
        return [(e.type or "", e.reason or "", e.message or "") for e in found.items]

    def all_events(self, name: str) -> list[tuple[str, str, str]]:
        found = self.kube.core.list_event_for_all_namespaces(
            field_selector=f"involvedObject.name={name}"
        )
        return [(e.type or "", e.reason or "", e.message or "") for e in found.items]

    def wait_event(
        self,
        name: str,
        reason: str,
        *,
        type: str | None = None,
        anywhere: bool = False,
        needle: str = "",
        timeout: float = 30,
    ) -> tuple[str, str, str]:
        """The first Event about ``name`` with ``reason`` (and ``type``, and ``needle`` in its
        message), waited for: the operator posts Events after the status write that records
        them, so a test that saw the status may look a moment before the Event exists."""

        def found() -> tuple[str, str, str] | None:
            events = self.all_events(name) if anywhere else self.events(name)
            return next(
                (
                    e
                    for e in events
                    if e[1] == reason and (type is None or e[0] == type) and needle in e[2]
                ),
                None,
            )

        return wait_for(found, what=f"Event {reason} on {name}", timeout=timeout)

    def item(self, policy: str, workload: str) -> dict[str, Any]:
        """What ``policy`` last said of Deployment ``workload``'s first container: the
        workload's own ``imagedrift.io/status`` note, else the policy's attention list."""
        try:
            body = self.get_deployment(workload)
        except ApiException:
            body = {}
        note = ((body.get("metadata") or {}).get("annotations") or {}).get(
            "imagedrift.io/status", ""
        )
        if note:
            detail = json.loads(note)
            if detail.get("policy") == policy and detail.get("containers"):
                return dict(detail["containers"][0])
        for item in ((self.get_policy(policy).get("status") or {}).get("workloads") or {}).get(
            "items"
        ) or []:
            if item.get("workload", "").endswith(f"/{self.namespace}/{workload}"):
                return dict(item)
        return {}

    def cleanup(self) -> None:
        for name in self.policies:
            try:
                self.kube.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def rolled_out(world: World, name: str, image: str) -> bool:
    """The Deployment runs ``image`` and its rollout is complete."""
    body = world.get_deployment(name)
    status = body.get("status") or {}
    want = body["spec"]["replicas"]
    return bool(
        body["spec"]["template"]["spec"]["containers"][0]["image"] == image
        and status.get("observedGeneration", 0) >= body["metadata"]["generation"]
        and status.get("updatedReplicas") == want
        and status.get("availableReplicas") == want
        and status.get("replicas") == want
    )

"""The test control plane is a real Kubernetes: Deployments roll out on kwok nodes, the API
server is the pinned version, the repository's CRDs are served, identities and RBAC work,
and the harness leaves no process behind."""

from __future__ import annotations

import copy
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import (
    REPO_ROOT,
    ControlPlane,
    HarnessError,
    Kube,
    find_bin_dir,
    iter_yaml_documents,
    pinned_versions,
    require_binaries,
)
from tests.harness.procs import wait_for

CRD_DIR = REPO_ROOT / "crds"
ROLLOUT_TIMEOUT = 120.0

# A valid object per CRD kind ("group/Kind"); CEL rules are beyond what
# `minimal_instance` can satisfy, so a CRD with them gets a sample here.
SAMPLES: dict[str, dict[str, Any]] = {
    "imagedrift.io/ImagePolicy": {
        "spec": {"base": {"image": "registry.example/base/python", "tag": "3.12-slim"}},
    },
}


# --- Deployments on kwok nodes -----------------------------------------------------------


def _deployment(name: str, image: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
            ),
        ),
    )


def test_deployment_becomes_available_and_rolls_out_a_new_image(kube: Kube, namespace: str) -> None:
    kube.apps.create_namespaced_deployment(
        namespace, _deployment("web", "registry.example/app:1", replicas=3)
    )

    def available() -> bool:
        status = kube.apps.read_namespaced_deployment_status("web", namespace).status
        return status is not None and status.available_replicas == 3

    wait_for(available, what="3 available replicas of web", timeout=ROLLOUT_TIMEOUT)

    patched = kube.apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "image": "registry.example/app:2"}]}
                }
            }
        },
    )
    assert patched.metadata is not None and patched.metadata.generation is not None
    generation = patched.metadata.generation

    def rolled_out() -> client.V1Deployment | None:
        deployment = kube.apps.read_namespaced_deployment_status("web", namespace)
        status = deployment.status
        done = (
            status is not None
            and status.observed_generation is not None
            and status.observed_generation >= generation
            and status.updated_replicas == 3
            and status.available_replicas == 3
            and status.replicas == 3  # no pod of the old ReplicaSet is left
        )
        return deployment if done else None

    deployment = wait_for(
        rolled_out, what="rollout of registry.example/app:2", timeout=ROLLOUT_TIMEOUT
    )
    assert deployment.status is not None and deployment.metadata is not None
    assert deployment.status.observed_generation == deployment.metadata.generation
    assert deployment.status.updated_replicas == 3
    progressing = {c.type: c for c in deployment.status.conditions or []}["Progressing"]
    assert progressing.reason == "NewReplicaSetAvailable"

    replica_sets = kube.apps.list_namespaced_replica_set(namespace, label_selector="app=web").items

    def image_of(rs: client.V1ReplicaSet) -> str | None:
        template = rs.spec.template  # a Deployment's ReplicaSet always has one
        assert template is not None and template.spec is not None
        return template.spec.containers[0].image

    by_image = {image_of(rs): rs for rs in replica_sets}
    assert set(by_image) == {"registry.example/app:1", "registry.example/app:2"}
    new, old = by_image["registry.example/app:2"], by_image["registry.example/app:1"]
    assert new.status is not None and old.status is not None
    assert new.status.ready_replicas == 3
    assert new.status.available_replicas == 3
    assert old.spec.replicas == 0
    assert not old.status.replicas

    def pods_on_new_image() -> list[client.V1Pod] | None:
        pods = kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
        done = len(pods) == 3 and all(
            pod.spec is not None and pod.spec.containers[0].image == "registry.example/app:2"
            for pod in pods
        )
        return pods if done else None

    pods = wait_for(pods_on_new_image, what="3 pods on app:2", timeout=ROLLOUT_TIMEOUT)
    for pod in pods:
        assert pod.status is not None and pod.spec is not None
        assert pod.status.phase == "Running"
        ready = {c.type: c.status for c in pod.status.conditions or []}
        assert ready.get("Ready") == "True"
        assert pod.spec.node_name


# --- the API server itself -----------------------------------------------------------------


def test_api_server_serves_the_pinned_version(controlplane: ControlPlane, kube: Kube) -> None:
    info = kube.version.get_code()
    pinned = pinned_versions()["KUBE_VERSION"]
    assert info.major == "1"
    assert info.git_version.startswith(f"v1.{info.minor.rstrip('+')}")
    if not controlplane.external:  # an existing cluster runs whatever version it runs
        assert controlplane.expected_version == pinned
        assert info.git_version == pinned
        assert info.minor == pinned.split(".")[1]
        client_version = json.loads(controlplane.kubectl("version", "-o", "json").stdout)
        assert client_version["clientVersion"]["gitVersion"] == pinned


def test_admin_identities_may_do_everything(controlplane: ControlPlane) -> None:
    from kubernetes import config

    kubeconfigs = [controlplane.kubeconfig, controlplane.cert_kubeconfig]
    for kubeconfig in [k for k in kubeconfigs if k is not None]:
        # `kubectl auth can-i '*' '*'` with the kubeconfig's own credentials: a
        # SelfSubjectAccessReview of every verb on every resource, in the namespace of the
        # kubeconfig's context (default when it names none).
        _, context = config.list_kube_config_contexts(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        namespace = context["context"].get("namespace") or "default"
        with controlplane.api_client(kubeconfig) as api:
            review = client.AuthorizationV1Api(api).create_self_subject_access_review(
                client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=client.V1ResourceAttributes(
                            namespace=namespace, verb="*", resource="*"
                        )
                    )
                )
            )
        assert review.status is not None and review.status.allowed, (kubeconfig, review.status)


def test_service_account_kubeconfig_is_bound_by_rbac(
    controlplane: ControlPlane, kube: Kube, namespace: str
) -> None:
    kube.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    kube.rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list"]
                )
            ],
        ),
    )
    kube.rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )
    kubeconfig = controlplane.service_account_kubeconfig(namespace, "reader")

    whoami = json.loads(
        controlplane.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"
    controlplane.kubectl("get", "configmaps", kubeconfig=kubeconfig)  # the namespace is the default
    denied = controlplane.kubectl("get", "secrets", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    with controlplane.api_client(kubeconfig) as api:
        names = [
            cm.metadata.name
            for cm in client.CoreV1Api(api).list_namespaced_config_map(namespace).items
            if cm.metadata is not None
        ]
    assert "kube-root-ca.crt" in names  # published by kube-controller-manager


# --- CRDs ------------------------------------------------------------------------------------


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value the OpenAPI schema accepts, for simple schemas (no CEL, no
    patterns that reject a plain word)."""
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: minimal_instance(properties[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [minimal_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return "2024-01-01T00:00:00Z"
    return "x" * max(1, int(schema.get("minLength", 1)))


def _sample_object(crd: dict[str, Any], version: dict[str, Any], name: str) -> dict[str, Any]:
    spec = crd["spec"]
    key = f"{spec['group']}/{spec['names']['kind']}"
    if key in SAMPLES:
        body = copy.deepcopy(SAMPLES[key])
    else:
        schema = version.get("schema", {}).get("openAPIV3Schema", {})
        body = minimal_instance(schema)
        for meta in ("apiVersion", "kind", "metadata", "status"):
            body.pop(meta, None)
    body["apiVersion"] = f"{spec['group']}/{version['name']}"
    body["kind"] = spec["names"]["kind"]
    body["metadata"] = {"name": name}
    return body


def _contains(actual: Any, expected: Any) -> bool:
    """``expected`` is ``actual`` minus what the server added (defaults)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _contains(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected)


@dataclass(frozen=True)
class _Resource:
    """One custom resource version, namespaced (in ``namespace``) or cluster-scoped."""

    kube: Kube
    group: str
    version: str
    plural: str
    namespace: str | None

    def create(self, body: dict[str, Any]) -> None:
        custom = self.kube.custom
        if self.namespace:
            custom.create_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, body
            )
        else:
            custom.create_cluster_custom_object(self.group, self.version, self.plural, body)

    def get(self, name: str) -> dict[str, Any]:
        custom = self.kube.custom
        if self.namespace:
            found = custom.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, name
            )
        else:
            found = custom.get_cluster_custom_object(self.group, self.version, self.plural, name)
        assert isinstance(found, dict)
        return found

    def delete(self, name: str) -> None:
        custom = self.kube.custom
        if self.namespace:
            custom.delete_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, name
            )
        else:
            custom.delete_cluster_custom_object(self.group, self.version, self.plural, name)


def apply_and_check_crds(
    controlplane: ControlPlane, kube: Kube, namespace: str, files: list[Path]
) -> list[str]:
    """Apply the CRD files, then prove each CRD is served: Established, in discovery, and a
    custom object can be created, read back and deleted. Returns the CRD names."""
    crds = [
        doc
        for _, doc in iter_yaml_documents(files)
        if doc.get("kind") == "CustomResourceDefinition"
    ]
    assert crds, f"no CustomResourceDefinition in {[str(f) for f in files]}"
    for path in files:
        controlplane.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=imagedrift-tests",
            "-f",
            str(path),
        )

    for crd in crds:
        name = crd["metadata"]["name"]
        spec = crd["spec"]
        group, plural = spec["group"], spec["names"]["plural"]
        namespaced = spec["scope"] == "Namespaced"

        def established(name: str = name) -> bool:
            status = kube.apiextensions.read_custom_resource_definition(name).status
            conditions = status.conditions if status is not None else None
            return any(c.type == "Established" and c.status == "True" for c in conditions or [])

        wait_for(established, what=f"CRD {name} Established", timeout=30)

        for version in [v for v in spec["versions"] if v.get("served")]:
            v = version["name"]

            def discovered(v: str = v, group: str = group, plural: str = plural) -> bool:
                resources = kube.custom.get_api_resources(group, v).resources
                return any(r.name == plural for r in resources)

            wait_for(discovered, what=f"{plural}.{group}/{v} in discovery", timeout=30)

            resource = _Resource(kube, group, v, plural, namespace if namespaced else None)
            obj_name = f"harness-check-{v}"
            body = _sample_object(crd, version, obj_name)
            try:
                resource.create(body)
            except ApiException as exc:
                pytest.fail(
                    f"creating {body['kind']} {obj_name} was refused ({exc.status}): {exc.body}; "
                    f"add a valid sample for {group}/{body['kind']} to SAMPLES"
                )
            try:
                read = resource.get(obj_name)
                assert read["metadata"]["name"] == obj_name
                assert read["kind"] == body["kind"]
                assert _contains(read.get("spec", {}), body.get("spec", {}))
            finally:
                resource.delete(obj_name)

            schema = version.get("schema", {}).get("openAPIV3Schema", {})
            if schema.get("required"):
                # The schema is enforced: an object without its required fields is refused.
                bare = {
                    "apiVersion": body["apiVersion"],
                    "kind": body["kind"],
                    "metadata": {"name": "bare"},
                }
                with pytest.raises(ApiException) as refused:
                    resource.create(bare)
                assert refused.value.status == 422
    return [crd["metadata"]["name"] for crd in crds]


def test_repository_crds_are_served(controlplane: ControlPlane, kube: Kube, namespace: str) -> None:
    files = sorted([*CRD_DIR.glob("*.yaml"), *CRD_DIR.glob("*.yml")])
    assert files, f"no CRD files in {CRD_DIR.relative_to(REPO_ROOT)}/"
    names = apply_and_check_crds(controlplane, kube, namespace, files)
    assert names


SAMPLE_CRD = textwrap.dedent(
    """\
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.harness.imagedrift.example
    spec:
      group: harness.imagedrift.example
      scope: Namespaced
      names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
      versions:
        - name: v1
          served: true
          storage: true
          subresources: {status: {}}
          schema:
            openAPIV3Schema:
              type: object
              required: [spec]
              properties:
                spec:
                  type: object
                  required: [size]
                  properties:
                    size: {type: integer, minimum: 1}
                    colour: {type: string, enum: [red, blue]}
                status:
                  type: object
                  properties:
                    ready: {type: boolean}
    """
)


def test_a_crd_from_a_file_is_served(
    controlplane: ControlPlane, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "widgets.yaml"
    path.write_text(SAMPLE_CRD)
    try:
        names = apply_and_check_crds(controlplane, kube, namespace, [path])
        assert names == ["widgets.harness.imagedrift.example"]
    finally:
        controlplane.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", str(path))


# --- the harness itself ------------------------------------------------------------------------


def test_missing_binaries_are_named(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(HarnessError) as error:
        require_binaries(tmp_path)
    message = str(error.value)
    assert "kube-apiserver" in message and "kwok" in message
    assert "etcd," not in message  # the one that is there is not reported
    assert "tests/controlplane/build.sh" in message


def test_a_dead_component_is_reported_and_stop_leaves_nothing(controlplane: ControlPlane) -> None:
    second = ControlPlane(bin_dir=controlplane.bin_dir or find_bin_dir())
    with second:
        pids = {name: proc.pid for name, proc in second.processes.items()}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert second.server is not None and second.server.startswith("https://127.0.0.1:")
        assert second.startup_seconds is not None

        second.processes["kube-scheduler"].kill()
        with pytest.raises(HarnessError, match="kube-scheduler exited"):
            second.check_alive()
        workdir = second.workdir
    assert workdir is not None and not workdir.exists()
    for name, pid in pids.items():
        assert not _running(pid), f"{name} (pid {pid}) survived stop()"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"  # a zombie is not running; os.kill(pid, 0) would say it is


def test_processes_listen_on_loopback_only(controlplane: ControlPlane) -> None:
    if controlplane.external:
        assert controlplane.processes == {}
        return
    pids = {proc.pid for proc in controlplane.processes.values()}
    listening = _listening_sockets_of(pids)
    assert listening, "found no listening sockets of the control plane"
    assert all(address == "127.0.0.1" for address, _ in listening), listening


def _listening_sockets_of(pids: set[int]) -> list[tuple[str, int]]:
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found: list[tuple[str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address_hex, port_hex = local.split(":")
            found.append((_decode_address(address_hex), int(port_hex, 16)))
    return found


def _decode_address(address_hex: str) -> str:
    if len(address_hex) == 8:
        return ".".join(str(b) for b in reversed(bytes.fromhex(address_hex)))
    return "ipv6:" + address_hex  # never loopback-v4: counts as a failure above

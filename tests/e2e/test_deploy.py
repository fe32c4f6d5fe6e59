"""Install and operate: deploy/ applies cleanly, its RBAC is enough to run the drift loop and
no more, and the Deployment's own command runs two replicas of which exactly one works."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.scenario import World, base_image, rolled_out
from tests.harness import leaks
from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.fixtures_operator import (
    DEPLOY_DIR,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    render_kustomization,
)
from tests.harness.operator import OperatorProcess
from tests.harness.procs import ManagedProcess, free_port, wait_for

if TYPE_CHECKING:
    from kubernetes import client as k8s

NS, SA = OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
# Who `kubectl auth can-i --as=system:serviceaccount:NS:SA` asks about: impersonating a
# ServiceAccount's user name gives it the groups of every ServiceAccount token.
OPERATOR_USER = f"system:serviceaccount:{NS}:{SA}"
OPERATOR_GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{NS}", "system:authenticated")
LEASE = "imagedrift"
CRDS = ("crd/imagepolicies.imagedrift.io",)
OVERLAY = DEPLOY_DIR / "overlays" / "aks-workload-identity"

# Everything the operator may do: (apiGroup, resource, resourceName, verb). The rules every
# authenticated user has (self-subject reviews) are left out. Secrets only in its namespace.
EXPECTED_RULES = {
    *{("imagedrift.io", "imagepolicies", "", v) for v in ("get", "list", "watch", "patch")},
    ("imagedrift.io", "imagepolicies/status", "", "patch"),
    *{
        ("apps", r, "", v)
        for r in ("deployments", "statefulsets", "daemonsets")
        for v in ("get", "list", "watch", "patch")
    },
    *{("batch", "cronjobs", "", v) for v in ("get", "list", "watch", "patch")},
    ("", "events", "", "create"),
    ("", "pods", "", "list"),  # the digest a tag-referenced container's node pulled
    ("apiextensions.k8s.io", "customresourcedefinitions", "", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "", "watch"),
    ("aquasecurity.github.io", "vulnerabilityreports", "", "list"),
    # GitOps write-back: where a workload's manifests live, read by name.
    ("kustomize.toolkit.fluxcd.io", "kustomizations", "", "get"),
    ("source.toolkit.fluxcd.io", "gitrepositories", "", "get"),
    ("argoproj.io", "applications", "", "get"),
}
# In its own namespace only: the Secrets a policy names, and the one Lease that elects.
AT_HOME = {
    ("", "secrets", "", "get"),
    ("coordination.k8s.io", "leases", "", "create"),
    ("coordination.k8s.io", "leases", LEASE, "get"),
    ("coordination.k8s.io", "leases", LEASE, "update"),
}
# In the smoke-test sandbox only: the Jobs of the smoke-test gate.
SANDBOX = "imagedrift-smoke"
IN_SANDBOX = {("batch", "jobs", "", "create"), ("batch", "jobs", "", "get")}
EVERYONE = {"selfsubjectreviews", "selfsubjectaccessreviews", "selfsubjectrulesreviews"}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objects, "Deployment")
    return deployment


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = operator_deployment(objects)["spec"]["template"]["spec"]["containers"]
    return container


# -- what deploy/ says ------------------------------------------------------------------------


def test_manifests_are_least_privilege_and_restricted(controlplane: ControlPlane) -> None:
    objects = render_kustomization(controlplane, DEPLOY_DIR)
    kinds = {o["kind"] for o in objects}
    assert {
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Service",
    } <= kinds
    assert {c["metadata"]["name"] for c in by_kind(objects, "CustomResourceDefinition")} == {
        "imagepolicies.imagedrift.io",
    }
    for role in [*by_kind(objects, "ClusterRole"), *by_kind(objects, "Role")]:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objects, "Role")}
    assert set(roles) == {NS, SANDBOX}
    assert roles[SANDBOX]["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}
    ]
    role = roles[NS]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [LEASE],
            "verbs": ["get", "update"],
        },
    ]
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert not any("secrets" in rule["resources"] for rule in cluster_role["rules"])

    deployment = operator_deployment(objects)
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == SA
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"requests", "limits"} <= set(container["resources"])
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}
    command = " ".join(container["command"] + container.get("args", []))
    assert "kopf run -m imagedrift.wiring --all-namespaces --standalone" in command
    assert "--liveness=http://0.0.0.0:8080/healthz" in command
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "webhook": 8443}
    env = {e["name"]: e for e in container["env"]}
    assert env["IMAGEDRIFT_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    assert env["IMAGEDRIFT_LEASE"]["value"] == LEASE
    assert env["IMAGEDRIFT_SMOKE_NAMESPACE"]["value"] == SANDBOX
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["IMAGEDRIFT_METRICS_PORT"]["value"] == "9090"
    assert env["MALLOC_ARENA_MAX"]["value"] == "2", "deploy/ runs it as the benchmark measured it"
    assert env["IMAGEDRIFT_WEBHOOK_PORT"]["value"] == "8443"
    assert env["IMAGEDRIFT_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]["name"]
    assert {"IMAGEDRIFT_WEBHOOK_CERT", "IMAGEDRIFT_WEBHOOK_KEY"} <= set(env)
    (policy,) = by_kind(objects, "NetworkPolicy")
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {9090, 8443}
    (service,) = by_kind(objects, "Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {9090, 8443}

    overlay = render_kustomization(controlplane, OVERLAY)
    (account,) = [a for a in by_kind(overlay, "ServiceAccount") if a["metadata"]["name"] == SA]
    assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]
    labels = operator_deployment(overlay)["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    assert (
        "azure.workload.identity/use"
        not in (operator_deployment(objects)["spec"]["template"]["metadata"]["labels"])
    )


def test_server_side_dry_run_of_deploy_passes(
    controlplane: ControlPlane, deploy_rbac: list[dict[str, Any]]
) -> None:
    # The namespace exists (deploy_rbac): a dry run cannot create it for the objects in it.
    result = controlplane.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY_DIR))
    assert result.returncode == 0
    for name in (
        "deployment.apps/imagedrift",
        "clusterrole.rbac.authorization.k8s.io/imagedrift",
        "networkpolicy.networking.k8s.io/imagedrift",
    ):
        assert name in result.stdout, result.stdout
    assert "(server dry run)" in result.stdout


# -- deploy/ applied for real -----------------------------------------------------------------


def test_install_applies_and_the_operator_deployment_becomes_available(
    controlplane: ControlPlane, kube: Kube, deploy_rbac: list[dict[str, Any]]
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        # The documented install: CRDs first, then everything.
        controlplane.kubectl("apply", "--server-side", "-k", str(DEPLOY_DIR / "crds"))
        controlplane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *CRDS)
        controlplane.kubectl("apply", "--server-side", "-k", str(DEPLOY_DIR))

        namespace = kube.core.read_namespace(NS).metadata
        assert namespace is not None and namespace.labels is not None
        assert namespace.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        account_meta = kube.core.read_namespaced_service_account(SA, NS).metadata
        assert account_meta is not None and account_meta.name == SA
        assert kube.rbac.read_cluster_role("imagedrift").rules
        subjects = kube.rbac.read_cluster_role_binding("imagedrift").subjects
        assert subjects is not None and subjects[0].namespace == NS
        role = kube.rbac.read_namespaced_role("imagedrift", NS)
        assert role.rules is not None
        assert [r.resources for r in role.rules] == [["secrets"], ["leases"], ["leases"]]
        sandbox_meta = kube.core.read_namespace(SANDBOX).metadata
        assert sandbox_meta is not None and sandbox_meta.labels is not None
        sandbox = sandbox_meta.labels
        assert sandbox["pod-security.kubernetes.io/enforce"] == "restricted"
        account = kube.core.read_namespaced_service_account("imagedrift-smoke", SANDBOX)
        assert account.automount_service_account_token is False
        assert kube.rbac.read_namespaced_role_binding("imagedrift", NS).role_ref.name == (
            "imagedrift"
        )
        service = kube.core.read_namespaced_service("imagedrift", NS)
        assert service.spec is not None and service.spec.ports

        # kwok runs no container, yet reports the pods Running: Available proves the pods
        # were admitted (restricted Pod Security) and scheduled, and the PDB sees them.
        controlplane.kubectl(
            "wait", "-n", NS, "--for=condition=Available", "--timeout=90s", "deploy/imagedrift"
        )
        status = kube.apps.read_namespaced_deployment("imagedrift", NS).status
        assert status is not None and status.available_replicas == 2
        pdbs = client.PolicyV1Api(kube.api_client)

        def pdb_counts_both() -> bool:
            pdb = pdbs.read_namespaced_pod_disruption_budget("imagedrift", NS).status
            return pdb is not None and pdb.current_healthy == 2

        wait_for(
            pdb_counts_both,
            what="the PodDisruptionBudget counts both replicas",
            timeout=30,
        )
    finally:
        # Nothing of the operator may keep running for the tests that follow.
        controlplane.kubectl(
            "delete", "-n", NS, "deployment/imagedrift", "--ignore-not-found", "--wait=true"
        )
    with pytest.raises(ApiException) as gone:
        kube.apps.read_namespaced_deployment("imagedrift", NS)
    assert gone.value.status == 404
    wait_for(
        lambda: (
            not kube.core.list_namespaced_pod(
                NS, label_selector="app.kubernetes.io/name=imagedrift"
            ).items
        ),
        what="the operator's pods are gone",
        timeout=60,
    )


# -- the rights are enough ... ----------------------------------------------------------------


def test_drift_loop_runs_with_the_service_accounts_rights(
    world: World,
    controlplane: ControlPlane,
    deploy_rbac: list[dict[str, Any]],
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    old_base = base_image("v1")
    world.publish("base", "1", old_base)
    world.publish("app", "1.0.0", world.app_on(old_base, "1.0.0"))
    world.deployment("web", f"{world.ref('app')}:1.0.0", policy=f"rbac-{world.suffix}")
    world.deployment("bystander", f"{world.ref('app')}:1.0.0", policy=None)
    base = {"image": world.ref("base"), "tag": "1", "interval": "2s", "insecure": True}
    policy = world.policy("rbac", {"base": base, "app": {"tags": {"semver": {"range": ">=1.0.0"}}}})
    operator = operator_factory(kubeconfig=controlplane.service_account_kubeconfig(NS, SA))

    world.wait_ready(policy, reason="UpToDate")
    new_base = base_image("v2")
    new_base_digest = world.publish("base", "1", new_base)
    world.wait_ready(policy, reason="WaitingForRebuild")
    rebuilt = world.publish("app", "1.0.1", world.app_on(new_base, "1.0.1"))
    target = f"{world.ref('app')}@{rebuilt}"
    wait_for(
        lambda: rolled_out(world, "web", target),
        what="web rolled to the rebuilt digest by the operator's ServiceAccount",
        timeout=90,
    )
    body = world.wait_ready(policy, reason="UpToDate", timeout=60)

    entry = body["status"]["lineage"][0]
    assert (entry["baseDigest"], entry["appDigest"], entry["verdict"]) == (
        new_base_digest,
        rebuilt,
        "Passed",
    )
    assert entry["rollouts"][0]["result"] == "Complete"
    assert world.image_of("bystander").endswith(":1.0.0")
    world.wait_event("web", "RolloutComplete")
    assert "RolloutStarted" in {r for _, r, _ in world.events("web")}
    world.wait_event(policy, "BaseChanged", anywhere=True)
    log = operator.log()
    assert "Forbidden" not in log and " 403" not in log, log[-3000:]


# -- ... and not more than enough -------------------------------------------------------------


def can_i_attributes(*args: str) -> k8s.V1ResourceAttributes:
    """What ``kubectl auth can-i ARGS`` asks, parsed as kubectl parses it: ``VERB
    RESOURCE[.GROUP][/NAME]`` (``/NAME`` is a resource name, never a subresource), the
    namespace of ``-n`` or else the admin kubeconfig's (it names none: ``default``), every
    namespace (``""``) with ``--all-namespaces``, and ``--subresource=SUB``."""
    from kubernetes import client

    words: list[str] = []
    namespace, subresource, everywhere = "default", "", False
    rest = iter(args)
    for arg in rest:
        if arg == "-n":
            namespace = next(rest)
        elif arg == "--all-namespaces":
            everywhere = True
        elif arg.startswith("--subresource="):
            subresource = arg.removeprefix("--subresource=")
        else:
            assert not arg.startswith("-"), f"kubectl auth can-i flag {arg} is not handled here"
            words.append(arg)
    verb, target = words
    kind, _, name = target.partition("/")
    # The first dot ends the resource and the group follows (deployments.apps,
    # leases.coordination.k8s.io); "*" and "users" go out in the core group "", as kubectl
    # sends them.
    resource, _, group = kind.partition(".")
    return client.V1ResourceAttributes(
        namespace="" if everywhere else namespace,
        verb=verb,
        group=group,
        resource=resource,
        subresource=subresource,
        name=name,
    )


def can_i(kube: Kube, *args: str) -> bool:
    """``kubectl auth can-i --as=system:serviceaccount:NS:SA ARGS`` as one request: a
    SubjectAccessReview for the operator's ServiceAccount, on the admin's client."""
    from kubernetes import client

    review = client.AuthorizationV1Api(kube.api_client).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=OPERATOR_USER,
                groups=list(OPERATOR_GROUPS),
                resource_attributes=can_i_attributes(*args),
            )
        )
    )
    status = review.status
    assert status is not None and not status.evaluation_error, (args, status)
    return bool(status.allowed)


@pytest.mark.parametrize(
    "args",
    [
        ("delete", "deployments.apps", "-n", "default"),
        ("create", "deployments.apps", "-n", "default"),
        ("update", "deployments.apps", "-n", "default"),
        ("delete", "statefulsets.apps", "-n", "default"),
        ("get", "secrets", "-n", "default"),
        ("get", "secrets", "-n", "kube-system"),
        ("list", "secrets", "-n", NS),
        ("watch", "secrets", "-n", NS),
        ("create", "secrets", "-n", NS),
        ("create", "pods", "-n", "default"),
        ("create", "pods", "-n", NS),
        ("create", "pods", "--subresource=exec", "-n", "default"),
        ("get", "configmaps", "-n", NS),
        ("*", "*", "--all-namespaces"),
        ("*", "deployments.apps", "-n", "default"),
        ("get", "*", "-n", "default"),
        ("create", "imagepolicies.imagedrift.io"),
        ("delete", "imagepolicies.imagedrift.io"),
        ("update", "imagepolicies.imagedrift.io"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "leases.coordination.k8s.io/someone-else", "-n", NS),
        ("delete", "leases.coordination.k8s.io/imagedrift", "-n", NS),
        ("list", "leases.coordination.k8s.io", "-n", NS),
        ("create", "leases.coordination.k8s.io", "-n", "default"),
        ("update", "leases.coordination.k8s.io/imagedrift", "-n", "kube-system"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ("impersonate", "users"),
        ("create", "serviceaccounts", "--subresource=token", "-n", NS),
        ("get", "nodes"),
        ("list", "namespaces"),
        ("delete", "events", "-n", "default"),
        ("patch", "events", "-n", "default"),
        ("delete", "jobs.batch", "-n", "default"),
        ("list", "jobs.batch", "--all-namespaces"),
        ("create", "jobs.batch", "-n", "default"),
        ("create", "jobs.batch", "-n", NS),
        ("create", "pods", "-n", SANDBOX),
        ("delete", "jobs.batch", "-n", SANDBOX),
        ("list", "kustomizations.kustomize.toolkit.fluxcd.io", "--all-namespaces"),
        ("patch", "kustomizations.kustomize.toolkit.fluxcd.io", "-n", "flux-system"),
        ("list", "gitrepositories.source.toolkit.fluxcd.io", "--all-namespaces"),
        ("get", "secrets", "-n", "flux-system"),
        ("update", "applications.argoproj.io", "-n", "argocd"),
    ],
    ids=lambda args: " ".join(args),
)
def test_service_account_is_denied(
    kube: Kube, deploy_rbac: list[dict[str, Any]], args: tuple[str, ...]
) -> None:
    allowed = can_i(kube, *args)
    assert not allowed, f"the operator's ServiceAccount may {' '.join(args)}"


def test_service_account_is_allowed_what_it_uses(
    kube: Kube, deploy_rbac: list[dict[str, Any]]
) -> None:
    questions = (
        ("patch", "deployments.apps", "-n", "default"),
        ("watch", "cronjobs.batch", "--all-namespaces"),
        ("patch", "imagepolicies.imagedrift.io", "--subresource=status"),
        ("get", "secrets", "-n", NS),
        ("create", "events", "-n", NS),
        ("update", "leases.coordination.k8s.io/imagedrift", "-n", NS),
        ("get", "leases.coordination.k8s.io/imagedrift", "-n", NS),
        ("create", "leases.coordination.k8s.io", "-n", NS),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "jobs.batch", "-n", SANDBOX),
        ("get", "jobs.batch", "-n", SANDBOX),
        # No CRD of Trivy's is installed here; a review names the resource all the same.
        ("list", "vulnerabilityreports.aquasecurity.github.io", "--all-namespaces"),
        ("get", "kustomizations.kustomize.toolkit.fluxcd.io", "-n", "flux-system"),
        ("get", "gitrepositories.source.toolkit.fluxcd.io", "-n", "flux-system"),
        ("get", "applications.argoproj.io", "-n", "argocd"),
    )
    denied = [args for args in questions if not can_i(kube, *args)]
    assert denied == []


def rules_of_service_account(controlplane: ControlPlane, namespace: str) -> set[tuple[str, ...]]:
    """What the ServiceAccount itself may do in ``namespace`` (a SelfSubjectRulesReview made
    with its own token, as `kubectl auth can-i --list` does), flattened."""
    from kubernetes import client

    kubeconfig = controlplane.service_account_kubeconfig(NS, SA)
    with controlplane.api_client(kubeconfig) as api:
        review = client.AuthorizationV1Api(api).create_self_subject_rules_review(
            client.V1SelfSubjectRulesReview(
                spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)
            )
        )
    assert review.status is not None
    assert not review.status.incomplete, review.status.evaluation_error
    flat: set[tuple[str, ...]] = set()
    for rule in review.status.resource_rules:
        assert rule.resources is not None, rule
        if set(rule.resources) <= EVERYONE:
            continue
        for group in rule.api_groups or [""]:
            for resource in rule.resources:
                for name in rule.resource_names or [""]:
                    for verb in rule.verbs:
                        flat.add((group, resource, name, verb))
    return flat


def test_service_account_has_exactly_the_expected_rules(
    controlplane: ControlPlane, deploy_rbac: list[dict[str, Any]], namespace: str
) -> None:
    elsewhere = rules_of_service_account(controlplane, namespace)
    assert elsewhere == EXPECTED_RULES, {
        "unexpected": sorted(elsewhere - EXPECTED_RULES),
        "missing": sorted(EXPECTED_RULES - elsewhere),
    }
    at_home = rules_of_service_account(controlplane, NS)
    assert at_home == EXPECTED_RULES | AT_HOME, sorted(at_home ^ (EXPECTED_RULES | AT_HOME))
    sandbox = rules_of_service_account(controlplane, SANDBOX)
    assert sandbox == EXPECTED_RULES | IN_SANDBOX, sorted(sandbox ^ (EXPECTED_RULES | IN_SANDBOX))


# -- the Deployment's command: two replicas, one at work ----------------------------------------


def start_replica(
    controlplane: ControlPlane,
    name: str,
    kubeconfig: Path,
    log_dir: Path,
    **overrides: str,
) -> tuple[ManagedProcess, int]:
    """Run the operator container's own command and env, as pod ``name`` would, on loopback."""
    container = operator_container(render_kustomization(controlplane, DEPLOY_DIR))
    port = free_port()
    argv = [*container["command"], *container.get("args", [])]
    argv = [a.replace("http://0.0.0.0:8080/", f"http://127.0.0.1:{port}/") for a in argv]
    assert f"--liveness=http://127.0.0.1:{port}/healthz" in argv, argv
    fields = {"metadata.namespace": NS, "metadata.name": name}
    env = {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
        if "value" in e or "fieldRef" in e.get("valueFrom", {})
    }
    env.update(
        KUBECONFIG=str(kubeconfig),
        # The venv's kopf and python, as the image's PATH has them.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # No listeners beyond the health endpoint on loopback in tests.
        IMAGEDRIFT_METRICS_PORT="0",
        IMAGEDRIFT_WEBHOOK_PORT="0",
        **overrides,
    )
    proc = ManagedProcess(name, argv, log_dir, env=env)
    leaks.watch(proc.log_path)

    def healthy() -> bool:
        import httpx

        proc.check_alive()
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200

    wait_for(healthy, what=f"{name} healthy ({shlex.join(argv)})", timeout=60)
    return proc, port


def lease_holder(kube: Kube) -> str:
    """The replica named in the Lease (its pod name; the holder adds a suffix per start)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        lease = client.CoordinationV1Api(kube.api_client).read_namespaced_lease(LEASE, NS)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    assert lease.spec is not None, lease  # the operator always writes one
    return str(lease.spec.holder_identity or "").rpartition("_")[0]


def test_two_replicas_of_the_deployment_command_work_one_at_a_time(
    controlplane: ControlPlane, kube: Kube, deploy_rbac: list[dict[str, Any]], tmp_path: Path
) -> None:
    kubeconfig = controlplane.service_account_kubeconfig(NS, SA)
    replicas: dict[str, ManagedProcess] = {}
    # A short lease so the crash case below waits seconds, not the default 15.
    fast = {"IMAGEDRIFT_LEASE_SECONDS": "6"}

    def logged(name: str, text: str) -> bool:
        return text in replicas[name].log_path.read_text(errors="replace")

    try:
        for name in ("imagedrift-replica-a", "imagedrift-replica-b"):
            replicas[name], _ = start_replica(controlplane, name, kubeconfig, tmp_path, **fast)
        active = wait_for(
            lambda: (lambda h: h if h in replicas else None)(lease_holder(kube)),
            what="one replica holds the Lease",
            timeout=60,
        )
        (standby,) = set(replicas) - {active}
        wait_for(
            lambda: logged(standby, f"lease {LEASE} is held by {active}_"),
            what=f"{standby} sees {active} leading and stands by",
            timeout=30,
        )
        assert logged(active, "leading as") and not logged(standby, "leading as")

        # SIGTERM, as when the pod is deleted: the leader releases the Lease, the standby
        # takes it at its next look instead of waiting out the lease.
        replicas[active].stop(grace=15)
        wait_for(
            lambda: lease_holder(kube) == standby,
            what=f"{standby} takes over after {active} stopped",
            timeout=20,
        )
        assert logged(active, "no longer leading") and logged(standby, "(take: released)")

        # SIGKILL, as when the node dies: nothing is released; a new standby waits out the
        # lease from the last renewal it saw, then takes over.
        third = "imagedrift-replica-c"
        replicas[third], _ = start_replica(controlplane, third, kubeconfig, tmp_path, **fast)
        wait_for(
            lambda: logged(third, f"lease {LEASE} is held by {standby}_"),
            what=f"{third} stands by",
            timeout=30,
        )
        replicas[standby].kill()
        wait_for(
            lambda: lease_holder(kube) == third,
            what=f"{third} takes over after {standby} was killed",
            timeout=30,
        )
        assert logged(third, "did not renew for"), replicas[third].log_tail()
        for name, proc in replicas.items():
            text = proc.log_path.read_text(errors="replace")
            assert "Forbidden" not in text and "APIForbiddenError" not in text, (name, text[-3000:])
    finally:
        for proc in replicas.values():
            proc.stop(grace=15)
    wait_for(
        lambda: lease_holder(kube) == "", what="the last replica released the Lease", timeout=5
    )

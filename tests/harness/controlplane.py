"""A real Kubernetes control plane on 127.0.0.1 for integration and end-to-end tests.

``ControlPlane`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kwok from binaries built out of Go modules (``tests/controlplane/build.sh``), creates fake
kwok nodes so Deployments get pods that become Running and Ready, and writes an admin
kubeconfig. Everything listens on 127.0.0.1 only, on free ports, in a temporary directory
that ``stop()`` removes together with every process it started.

Environment:

``IMAGEDRIFT_CONTROLPLANE_BIN``
    A directory holding prebuilt ``etcd``, ``kube-apiserver``, ``kube-controller-manager``,
    ``kube-scheduler``, ``kubectl`` and ``kwok``. Unset: ``tests/controlplane/build.sh``
    builds them once (cached by version outside the work tree, see ``IMAGEDRIFT_CACHE``
    there) and prints the directory.
``IMAGEDRIFT_KUBECONFIG``
    Use the existing cluster this kubeconfig points at and start nothing. The cluster must
    schedule and run pods by itself; tests still get their own namespaces. ``kubectl`` is
    taken from ``IMAGEDRIFT_CONTROLPLANE_BIN`` if set, else from ``PATH``.

Typical use (the pytest fixtures in ``fixtures_controlplane.py`` do exactly this)::

    with ControlPlane.from_env() as cp:
        cp.kubectl("get", "nodes")
        api = kubernetes.client.CoreV1Api(cp.api_client())
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness import leaks
from tests.harness.procs import (
    LOOPBACK,
    HarnessError,
    ManagedProcess,
    free_port,
    proc_status,
    wait_while_alive,
)
from tests.harness.tlsca import new_authority, pem_cert, pem_key

if TYPE_CHECKING:
    from kubernetes import client as k8s

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTROLPLANE_DIR = REPO_ROOT / "tests" / "controlplane"
BUILD_SCRIPT = CONTROLPLANE_DIR / "build.sh"
VERSIONS_FILE = CONTROLPLANE_DIR / "versions.env"

ENV_BIN = "IMAGEDRIFT_CONTROLPLANE_BIN"
ENV_KUBECONFIG = "IMAGEDRIFT_KUBECONFIG"

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)

ADMIN_USER = "imagedrift-admin"
ADMIN_GROUP = "system:masters"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
FAKE_NODE_LABEL = "imagedrift.test/fake-node"

# A cold first start (page cache empty) takes longer than a warm one; these bound each step.
ETCD_TIMEOUT = 30.0
APISERVER_TIMEOUT = 90.0
COMPONENT_TIMEOUT = 90.0
BUILD_TIMEOUT = 3 * 3600.0

# kwok's stages (see the comment at the top of that file for why and what they do).
KWOK_STAGES_FILE = Path(__file__).resolve().parents[1] / "controlplane" / "kwok-stages.yaml"

# --- binaries and versions ---------------------------------------------------------------


def pinned_versions() -> dict[str, str]:
    """The ``KEY=value`` pins of ``tests/controlplane/versions.env`` (KUBE_VERSION, ...)."""
    pins: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        pins[key.strip()] = value.strip().strip("\"'")
    return pins


def find_bin_dir() -> Path:
    """The directory of control-plane binaries: ``$IMAGEDRIFT_CONTROLPLANE_BIN`` or the
    cached build of ``tests/controlplane/build.sh`` (built first if missing)."""
    configured = os.environ.get(ENV_BIN)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise HarnessError(
                f"{ENV_BIN}={configured} is not a directory; point it at a directory with "
                f"{', '.join(BINARIES)} or unset it to build them with {_rel(BUILD_SCRIPT)}"
            )
        return path
    # Only the control plane: the real node's binaries are built when a test asks for that
    # node (tests/harness/node.py).
    return run_build("controlplane", f"or set {ENV_BIN} to a directory of prebuilt binaries")


def run_build(target: str, hint: str) -> Path:
    """Run ``build.sh target`` (it builds what is missing and caches it) and return the bin
    directory it prints; HarnessError with the tail of its output when it fails."""
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), target],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(
            f"{_rel(BUILD_SCRIPT)} {target} did not finish within {BUILD_TIMEOUT:.0f}s"
        ) from exc
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise HarnessError(
            f"{_rel(BUILD_SCRIPT)} {target} failed with code {result.returncode} "
            f"(it needs Go; {hint}):\n{tail}"
        )
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise HarnessError(f"{_rel(BUILD_SCRIPT)} {target} printed no bin directory")
    return Path(lines[-1])


def require_binaries(bin_dir: Path, names: Sequence[str] = BINARIES) -> dict[str, Path]:
    """Paths of the named executables in ``bin_dir``; HarnessError names any that is missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in names:
        path = bin_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path
        else:
            missing.append(name)
    if missing:
        source = f"${ENV_BIN}" if os.environ.get(ENV_BIN) else _rel(BUILD_SCRIPT)
        raise HarnessError(
            f"missing control-plane binaries {', '.join(missing)} in {bin_dir} (from {source}); "
            f"run {_rel(BUILD_SCRIPT)} (needs Go) or set {ENV_BIN} to a directory that holds "
            "them"
        )
    return found


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO_ROOT))
    return str(path)


# --- certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway cluster PKI: a CA, the serving certificate of the API server
    (also used by controller-manager and scheduler), an admin client certificate and the
    service-account signing key pair."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def create(cls, directory: Path, *, days: int = 7) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca = new_authority(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagedrift-test-ca")]), days=days
        )
        ca_key = ca.key
        serving_cert, serving_key = ca.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            [
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes"),
                x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"),
                x509.DNSName("kubernetes.default.svc.cluster.local"),
                x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
            ],
        )
        # The API server maps CN to the user name and O to groups.
        admin_cert, admin_key = ca.issue(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                    x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
                ]
            ),
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())

        pki = cls(
            ca_cert=directory / "ca.crt",
            ca_key=directory / "ca.key",
            serving_cert=directory / "serving.crt",
            serving_key=directory / "serving.key",
            admin_cert=directory / "admin.crt",
            admin_key=directory / "admin.key",
            sa_key=directory / "sa.key",
            sa_pub=directory / "sa.pub",
        )
        pki.ca_cert.write_bytes(pem_cert(ca.cert))
        pki.serving_cert.write_bytes(pem_cert(serving_cert))
        pki.admin_cert.write_bytes(pem_cert(admin_cert))
        pki.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        for path, key in (
            (pki.ca_key, ca_key),
            (pki.serving_key, serving_key),
            (pki.admin_key, admin_key),
            (pki.sa_key, sa_key),
        ):
            path.write_bytes(pem_key(key))
            path.chmod(0o600)
        return pki


# --- kubeconfig --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes | None,
    user: Mapping[str, str],
    name: str = "imagedrift-test",
    namespace: str | None = None,
) -> Path:
    """Write a self-contained kubeconfig (CA embedded) for one cluster, user and context."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path


# --- the control plane -------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1,
    or an existing cluster (``IMAGEDRIFT_KUBECONFIG``).

    Public attributes after ``start()``: ``kubeconfig`` (admin, bearer token),
    ``cert_kubeconfig`` (admin, client certificate; None for an existing cluster),
    ``server``, ``ca_path``, ``token``, ``bin_dir``, ``node_names``, ``external``,
    ``startup_seconds`` (start to node Ready), ``processes`` (name -> ManagedProcess).
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        existing_kubeconfig: Path | None = None,
        nodes: int = 1,
    ) -> None:
        if nodes < 1 and existing_kubeconfig is None:
            raise ValueError("a started control plane needs at least one node")
        self.bin_dir = bin_dir
        self.external = existing_kubeconfig is not None
        self._existing_kubeconfig = existing_kubeconfig
        self._node_count = 0 if self.external else nodes
        self.node_names: list[str] = []
        self.processes: dict[str, ManagedProcess] = {}
        self.workdir: Path | None = None
        self.kubeconfig: Path | None = None
        self.cert_kubeconfig: Path | None = None
        self.server: str | None = None
        self.ca_path: Path | None = None
        self.token: str | None = None
        self.startup_seconds: float | None = None
        self.step_seconds: dict[str, float] = {}
        self.pki: Pki | None = None
        self._binaries: dict[str, Path] = {}
        self._started = False

    @classmethod
    def from_env(cls, *, nodes: int = 1) -> ControlPlane:
        """Configured from ``IMAGEDRIFT_KUBECONFIG`` / ``IMAGEDRIFT_CONTROLPLANE_BIN``."""
        existing = os.environ.get(ENV_KUBECONFIG)
        if existing:
            path = Path(existing).expanduser()
            if not path.is_file():
                raise HarnessError(f"{ENV_KUBECONFIG}={existing} is not a file")
            configured_bin = os.environ.get(ENV_BIN)
            return cls(
                existing_kubeconfig=path,
                bin_dir=Path(configured_bin).expanduser() if configured_bin else None,
            )
        return cls(bin_dir=find_bin_dir(), nodes=nodes)

    # -- context manager ----------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- public API ---------------------------------------------------------------------

    @property
    def expected_version(self) -> str | None:
        """The pinned KUBE_VERSION when this harness started the cluster, else None."""
        return None if self.external else pinned_versions()["KUBE_VERSION"]

    def start(self) -> ControlPlane:
        """Start everything and wait (bounded) until the node is Ready; idempotent."""
        if self._started:
            return self
        self.processes, self.node_names, self.step_seconds = {}, [], {}
        if not self.external:
            self._binaries = require_binaries(self._require(self.bin_dir, "bin_dir"))
        self.workdir = Path(tempfile.mkdtemp(prefix="imagedrift-cp-"))
        try:
            if self.external:
                self._adopt_existing()
            else:
                self._start_local()
        except BaseException as exc:
            # Also on KeyboardInterrupt: nothing may outlive a failed start. Keep the files
            # so the logs can be read.
            self.stop(keep_files=True)
            exc.add_note(f"control-plane files and logs kept in {self.workdir}")
            raise
        self._started = True
        return self

    def stop(self, *, keep_files: bool = False) -> None:
        """Stop every process this harness started (process groups, SIGTERM then SIGKILL)
        in reverse start order, and remove the temporary directory unless ``keep_files``."""
        for proc in reversed(list(self.processes.values())):
            with contextlib.suppress(Exception):
                proc.stop(grace=5.0)
        self._started = False
        if self.workdir is not None and not keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def check_alive(self) -> None:
        """HarnessError (with the log tail) if a process this harness started has exited."""
        for proc in self.processes.values():
            proc.check_alive()

    def crash_apiserver(self) -> None:
        """SIGKILL kube-apiserver and start it again with the same arguments, as when its
        node dies and comes back; returns once /readyz answers. etcd keeps the data, the
        other components reconnect by themselves."""
        if self.external:
            raise HarnessError("an external control plane cannot be crashed from here")
        old = self.processes["kube-apiserver"]
        old.kill()
        old.stop()
        self.processes["kube-apiserver"] = ManagedProcess(
            "kube-apiserver", old.argv, old.log_path.parent
        )
        self._wait(
            self._api_ready,
            what="kube-apiserver /readyz after the crash",
            timeout=APISERVER_TIMEOUT,
        )

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running process this harness started, by name."""
        sizes: dict[str, int] = {}
        for name, proc in self.processes.items():
            if proc.alive():
                sizes[name] = _rss_of(proc.pid)
        return sizes

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        kubeconfig: Path | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (admin kubeconfig unless ``kubeconfig``).

        Raises HarnessError with stderr if it fails and ``check`` is true.
        """
        config = kubeconfig or self._require(self.kubeconfig, "kubeconfig")
        argv = [
            str(self._kubectl_path()),
            f"--kubeconfig={config}",
            f"--cache-dir={self._require(self.workdir, 'workdir') / 'kubectl-cache'}",
            *args,
        ]
        try:
            result = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, "KUBECONFIG": str(config)},
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"kubectl {' '.join(args)} timed out after {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise HarnessError(
                f"kubectl {' '.join(args)} failed with code {result.returncode}:\n"
                f"{result.stderr.strip()}"
            )
        return result

    def api_client(self, kubeconfig: Path | None = None) -> k8s.ApiClient:
        """A new ``kubernetes.client.ApiClient`` for the admin (or the given kubeconfig).

        The caller owns it (``close()`` it, or use it as a context manager).
        """
        from kubernetes import config as kube_config

        path = kubeconfig or self._require(self.kubeconfig, "kubeconfig")
        api_client = kube_config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        return cast("k8s.ApiClient", api_client)

    def kubeconfig_for_token(self, token: str, *, name: str, namespace: str | None = None) -> Path:
        """A kubeconfig file authenticating with ``token`` (e.g. a ServiceAccount token),
        written into the control plane's temporary directory."""
        workdir = self._require(self.workdir, "workdir")
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
        leaks.remember(token, f"Kubernetes token of {name}")
        return write_kubeconfig(
            workdir / "kubeconfigs" / f"{safe}.kubeconfig",
            server=self._require(self.server, "server"),
            ca_pem=self.ca_path.read_bytes() if self.ca_path else None,
            user={"token": token},
            name=safe,
            namespace=namespace,
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig for ServiceAccount ``namespace/name`` with a fresh token from the
        TokenRequest API, defaulting to that namespace (the account must exist)."""
        from kubernetes import client

        with self.api_client() as api:
            response = client.CoreV1Api(api).create_namespaced_service_account_token(
                name,
                namespace,
                client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(
                        audiences=[],
                        expiration_seconds=expiration_seconds,
                    )
                ),
            )
        if response.status is None or not response.status.token:
            raise HarnessError(f"TokenRequest for {namespace}/{name} returned no token")
        return self.kubeconfig_for_token(
            response.status.token, name=f"sa-{namespace}-{name}", namespace=namespace
        )

    def create_node(self, name: str) -> None:
        """Create a fake node that kwok manages (no taints; room for many pods)."""
        from kubernetes import client

        resources = {"cpu": "32", "memory": "256Gi", "pods": "250"}
        node = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=name,
                annotations={
                    "kwok.x-k8s.io/node": "fake",
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                labels={
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                    "type": "kwok",
                    FAKE_NODE_LABEL: "true",
                },
            ),
            spec=client.V1NodeSpec(),
            # kwok's node-initialize stage keeps these and fills in the rest of the status.
            status=client.V1NodeStatus(allocatable=resources, capacity=resources),
        )
        with self.api_client() as api:
            client.CoreV1Api(api).create_node(node)
        self.node_names.append(name)

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _require(value: T | None, what: str) -> T:
        if value is None:
            raise HarnessError(f"the control plane is not started ({what} is unset)")
        return value

    def _kubectl_path(self) -> Path:
        if "kubectl" in self._binaries:
            return self._binaries["kubectl"]
        if self.bin_dir is not None:
            return require_binaries(self.bin_dir, ["kubectl"])["kubectl"]
        found = shutil.which("kubectl")
        if found is None:
            raise HarnessError(
                f"kubectl not found: set {ENV_BIN} to the directory of the built binaries "
                f"({_rel(BUILD_SCRIPT)} prints it) or put kubectl on PATH"
            )
        return Path(found)

    def _adopt_existing(self) -> None:
        path = self._require(self._existing_kubeconfig, "existing kubeconfig")
        workdir = self._require(self.workdir, "workdir")
        document = yaml.safe_load(path.read_text()) or {}
        contexts = {c["name"]: c.get("context", {}) for c in document.get("contexts") or []}
        clusters = {c["name"]: c.get("cluster", {}) for c in document.get("clusters") or []}
        users = {u["name"]: u.get("user", {}) for u in document.get("users") or []}
        context = contexts.get(document.get("current-context", ""), {})
        cluster = clusters.get(context.get("cluster", ""), {})
        user = users.get(context.get("user", ""), {}) or {}
        if not cluster.get("server"):
            raise HarnessError(f"{ENV_KUBECONFIG}={path}: the current context names no server")
        self.kubeconfig = path
        self.server = str(cluster["server"])
        if cluster.get("certificate-authority-data"):
            self.ca_path = workdir / "ca.crt"
            self.ca_path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        elif cluster.get("certificate-authority"):
            self.ca_path = (path.parent / cluster["certificate-authority"]).resolve()
        self.token = user.get("token")
        leaks.remember(self.token, "the existing cluster's token")
        started = time.monotonic()
        self._wait(self._api_ready, what=f"{self.server}/readyz", timeout=APISERVER_TIMEOUT)
        self.startup_seconds = time.monotonic() - started

    def _start_local(self) -> None:
        workdir = self._require(self.workdir, "workdir")
        started = time.monotonic()
        mark = started

        def step(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.step_seconds[name] = now - mark
            mark = now

        logs = workdir / "logs"
        self.pki = pki = Pki.create(workdir / "pki")
        self.ca_path = pki.ca_cert
        self.token = secrets.token_urlsafe(32)
        leaks.remember(self.token, "control plane admin token")
        token_file = workdir / "tokens.csv"
        token_file.write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"{ADMIN_GROUP}"\n')
        token_file.chmod(0o600)
        step("pki")

        etcd_port, etcd_peer_port = free_port(), free_port()
        etcd_url = f"http://{LOOPBACK}:{etcd_port}"
        peer_url = f"http://{LOOPBACK}:{etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=imagedrift",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=imagedrift={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs,
        )

        apiserver_port = free_port()
        self.server = f"https://{LOOPBACK}:{apiserver_port}"
        self.kubeconfig = write_kubeconfig(
            workdir / "admin.kubeconfig",
            server=self.server,
            ca_pem=pki.ca_cert.read_bytes(),
            user={"token": self.token},
        )
        self.cert_kubeconfig = write_kubeconfig(
            workdir / "admin-cert.kubeconfig",
            server=self.server,
            ca_pem=pki.ca_cert.read_bytes(),
            user={
                "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
                "client-key-data": _b64(pki.admin_key.read_bytes()),
            },
        )

        self._wait(
            lambda: _http_get(f"{etcd_url}/health").get("health") == "true",
            what="etcd /health",
            timeout=ETCD_TIMEOUT,
        )
        step("etcd")

        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={apiserver_port}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={token_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                # The default (lease) reconciler writes the advertise address into the
                # `kubernetes` Endpoints every 10s, and validation refuses 127.0.0.1 there.
                "--endpoint-reconciler-type=none",
                # A real node (node.py) is named localhost and serves on 127.0.0.1, which
                # kubelets refuse as a node IP: reach kubelets by Hostname first. kwok's
                # nodes have no Hostname address and are reached by InternalIP as before.
                "--kubelet-preferred-address-types=Hostname,InternalIP,ExternalIP",
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                # Front-proxy settings, published in kube-system/extension-apiserver-
                # authentication; without them controller-manager and scheduler log an
                # error per resync. No certificate with this name is ever issued.
                f"--requestheader-client-ca-file={pki.ca_cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            ],
            logs,
        )
        self._wait(self._api_ready, what="kube-apiserver /readyz", timeout=APISERVER_TIMEOUT)
        step("kube-apiserver")

        kcm_port, scheduler_port = free_port(), free_port()
        delegated = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            f"--bind-address={LOOPBACK}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                *delegated,
                f"--secure-port={kcm_port}",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # Thousands of Deployments (the scale benchmark) settle and roll in minutes,
                # not hours: at 100 requests a second the Deployment controller had observed
                # a few hundred of 10,000 Deployments when a base push rolled 500 of them.
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--concurrent-deployment-syncs=50",
                "--concurrent-replicaset-syncs=50",
                "--profiling=false",
            ],
            logs,
        )
        self._spawn(
            "kube-scheduler",
            [*delegated, f"--secure-port={scheduler_port}", "--profiling=false"],
            logs,
        )
        kwok_dir = workdir / "kwok"
        kwok_dir.mkdir()
        (kwok_dir / "stages.yaml").write_text(KWOK_STAGES_FILE.read_text())
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={kwok_dir / 'stages.yaml'}",
                # Only the nodes create_node() makes: a real kubelet's node (node.py) is
                # its own, and kwok would take over every node otherwise.
                f"--manage-nodes-with-label-selector={FAKE_NODE_LABEL}=true",
                f"--node-ip={LOOPBACK}",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
            ],
            logs,
            # Keeps kwok from reading a user's ~/.kwok/kwok.yaml.
            env={"KWOK_WORKDIR": str(kwok_dir)},
        )
        for index in range(self._node_count):
            self.create_node(f"kwok-node-{index}")

        ca = pki.ca_cert
        self._wait(
            lambda: _https_get(f"https://{LOOPBACK}:{kcm_port}/healthz", ca) == "ok",
            what="kube-controller-manager /healthz",
            timeout=COMPONENT_TIMEOUT,
        )
        self._wait(
            lambda: _https_get(f"https://{LOOPBACK}:{scheduler_port}/healthz", ca) == "ok",
            what="kube-scheduler /healthz",
            timeout=COMPONENT_TIMEOUT,
        )
        step("controller-manager+scheduler")
        self._wait(
            self._default_service_account_exists,
            what="ServiceAccount default/default (kube-controller-manager)",
            timeout=COMPONENT_TIMEOUT,
        )
        step("default-serviceaccount")
        self._wait(
            self._nodes_ready,
            what=f"nodes {', '.join(self.node_names)} Ready and untainted (kwok)",
            timeout=COMPONENT_TIMEOUT,
        )
        step("nodes-ready")
        self.startup_seconds = time.monotonic() - started

    def _spawn(
        self,
        name: str,
        args: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> ManagedProcess:
        proc = ManagedProcess(name, [str(self._binaries[name]), *args], log_dir, env=env)
        self.processes[name] = proc
        return proc

    def _wait(self, probe: Callable[[], T | None], *, what: str, timeout: float) -> T:
        """``wait_for`` that gives up at once, with the log tail, when a process dies."""
        return wait_while_alive(self.processes.values(), probe, what=what, timeout=timeout, tail=15)

    def _api_ready(self) -> bool:
        server = self._require(self.server, "server")
        if self.external:
            from kubernetes import client

            with self.api_client() as api:
                return bool(client.VersionApi(api).get_code(_request_timeout=5).git_version)
        return _https_get(f"{server}/readyz", self.ca_path, token=self.token) == "ok"

    def _default_service_account_exists(self) -> bool:
        body = json.loads(
            _https_get(
                f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
                self.ca_path,
                token=self.token,
            )
        )
        return bool(body.get("metadata", {}).get("name") == "default")

    def _nodes_ready(self) -> bool:
        for name in self.node_names:
            node = json.loads(
                _https_get(f"{self.server}/api/v1/nodes/{name}", self.ca_path, token=self.token)
            )
            conditions = node.get("status", {}).get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            # The node lifecycle controller lifts the not-ready taint a moment after Ready;
            # the scheduler places nothing before that.
            tainted = any(
                t.get("effect") in ("NoSchedule", "NoExecute")
                for t in node.get("spec", {}).get("taints") or []
            )
            if not ready or tainted:
                return False
        return True


# --- small helpers -----------------------------------------------------------------------


def _http_get(url: str) -> dict[str, Any]:
    # An empty ProxyHandler: loopback traffic never goes through a configured proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return dict(json.loads(response.read()))


def _https_get(url: str, ca: Path | None, *, token: str | None = None) -> str:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with opener.open(request, timeout=5) as response:
        return str(response.read().decode())


def _rss_of(pid: int) -> int:
    try:
        return proc_status(pid, "VmRSS") * 1024
    except (OSError, ValueError, IndexError, HarnessError):
        return 0


@dataclass(frozen=True)
class Kube:
    """Typed kubernetes client APIs bound to one ApiClient."""

    api_client: k8s.ApiClient
    core: k8s.CoreV1Api
    apps: k8s.AppsV1Api
    custom: k8s.CustomObjectsApi
    apiextensions: k8s.ApiextensionsV1Api
    rbac: k8s.RbacAuthorizationV1Api
    coordination: k8s.CoordinationV1Api
    events: k8s.EventsV1Api
    version: k8s.VersionApi

    @classmethod
    def from_api_client(cls, api_client: k8s.ApiClient) -> Kube:
        from kubernetes import client

        return cls(
            api_client=api_client,
            core=client.CoreV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
            apiextensions=client.ApiextensionsV1Api(api_client),
            rbac=client.RbacAuthorizationV1Api(api_client),
            coordination=client.CoordinationV1Api(api_client),
            events=client.EventsV1Api(api_client),
            version=client.VersionApi(api_client),
        )


def iter_yaml_documents(paths: Sequence[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Each non-empty YAML document of the given files, with the file it came from."""
    for path in paths:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


__all__ = [
    "BINARIES",
    "ENV_BIN",
    "ENV_KUBECONFIG",
    "FAKE_NODE_LABEL",
    "ControlPlane",
    "HarnessError",
    "Kube",
    "Pki",
    "find_bin_dir",
    "iter_yaml_documents",
    "pinned_versions",
    "require_binaries",
    "write_kubeconfig",
]

"""A real node beside the harness's control plane: kubelet + containerd + runc on this machine.

``RealNode`` runs containerd and the kubelet in a mount namespace of their own, so that
what they insist on writing stays in the node's directory and off the host:

- ``/var/lib``, ``/var/log`` are bound to directories of the run and ``/run`` is a tmpfs
  there (the kubelet and containerd's CNI code write under those even when told otherwise);
- the three kernel settings the kubelet checks (``vm.overcommit_memory``, ``kernel.panic``,
  ``kernel.panic_on_oops``) are files of the run bound over their ``/proc/sys`` entries, so
  the kubelet reads the values it wants and writes nothing host-wide.

The node registers as ``localhost`` (the kubelet refuses a loopback node IP; the API server
reaches it by Hostname on 127.0.0.1) with the taint ``imagedrift.test/real-node`` (pods
meant for it use ``placement()``; nothing else lands there), authenticates with a
``system:node:localhost`` client certificate from the cluster's CA, and runs pods under a
cgroup root of its own (cgroup v1, ``cgroupfs`` driver). Pods get a private /24 on a bridge
with no address and no route out: no traffic leaves the machine. Images come from the
loopback registry over plain HTTP (``certs.d/<host>/hosts.toml``); the sandbox (pause) image
is pushed there too.

``stop()`` deletes every pod on the node, stops the kubelet then containerd, kills what is
left in the node's namespace and cgroups, deletes the bridge and the cgroups, and asserts
with ``leftovers()`` that no mount, process, link, netns, cgroup or host path remains.

Binaries: ``kubelet``, ``containerd`` and ``containerd-shim-runc-v2`` from
``tests/controlplane/build.sh node`` (or ``IMAGEDRIFT_NODE_BIN``); ``runc``, the CNI
plugins and busybox from Debian (``scripts/install-system-deps.sh``). Needs root and
cgroup v1 controllers under ``/sys/fs/cgroup``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness.controlplane import ControlPlane, _b64, run_build, write_kubeconfig
from tests.harness.procs import (
    LOOPBACK,
    HarnessError,
    ManagedProcess,
    free_port,
    wait_for,
    wait_while_alive,
)
from tests.harness.registry import Registry
from tests.harness.runnable_images import push_pause
from tests.harness.tlsca import Authority, pem_cert, pem_key

if TYPE_CHECKING:
    from kubernetes import client as k8s

NODE_NAME: Final = "localhost"
ENV_NODE_BIN: Final = "IMAGEDRIFT_NODE_BIN"
NODE_BINARIES: Final = ("kubelet", "containerd", "containerd-shim-runc-v2")
RUNC: Final = Path("/usr/sbin/runc")
CNI_BIN_DIR: Final = Path("/usr/lib/cni")
CNI_PLUGINS: Final = ("bridge", "host-local", "loopback")
# Pods get addresses from this /24 on the node's bridge; nothing routes it anywhere else.
POD_SUBNET: Final = "10.247.0.0/24"
# The node registers with this taint: the session's other tests, whose pods kwok fakes and
# whose images cannot run, never land on it. Pods meant for it tolerate it and select it
# with ``kubernetes.io/hostname: localhost``.
TAINT_KEY: Final = "imagedrift.test/real-node"
NODE_ROLE_BINDING: Final = "imagedrift-test-nodes"
CGROUP_V1: Final = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS: Final = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "systemd",
)
# Host paths a kubelet or containerd write when not kept in the node's mount namespace.
HOST_PATHS: Final = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/run/netns",
    "/var/log/containers",
    "/var/log/pods",
)
KERNEL_SETTINGS: Final = {
    "vm/overcommit_memory": "1",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
}
START_TIMEOUT: Final = 90.0
POD_GONE_TIMEOUT: Final = 90.0
LEFTOVER_GRACE: Final = 10.0


def find_node_bin_dir() -> Path:
    """``$IMAGEDRIFT_NODE_BIN`` or the cached build of ``build.sh node`` (built if missing)."""
    configured = os.environ.get(ENV_NODE_BIN)
    if configured:
        return Path(configured).expanduser()
    return run_build("node", f"or set {ENV_NODE_BIN} to a directory of prebuilt binaries")


def preflight(bin_dir: Path) -> dict[str, Path]:
    """The node's executables; HarnessError says what this machine lacks."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("a real node needs root (mount namespaces, cgroups, network links)")
    found: dict[str, Path] = {}
    for name in NODE_BINARIES:
        path = bin_dir / name
        if os.access(path, os.X_OK):
            found[name] = path
        else:
            problems.append(f"{path} is missing (tests/controlplane/build.sh node builds it)")
    for path in (RUNC, *(CNI_BIN_DIR / plugin for plugin in CNI_PLUGINS)):
        if not os.access(path, os.X_OK):
            problems.append(f"{path} is missing (scripts/install-system-deps.sh installs it)")
    for controller in CGROUP_CONTROLLERS:
        if not (CGROUP_V1 / controller).is_dir():
            problems.append(f"no cgroup v1 hierarchy at {CGROUP_V1 / controller}")
    for tool in ("unshare", "nsenter", "mount", "ip"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH")
    if problems:
        raise HarnessError("cannot start a real node:\n- " + "\n- ".join(problems))
    return found


class RealNode:
    """kubelet + containerd registered as node ``localhost`` of ``controlplane``."""

    def __init__(
        self, controlplane: ControlPlane, registry: Registry, *, bin_dir: Path | None = None
    ) -> None:
        if controlplane.external or controlplane.pki is None:
            raise HarnessError("a real node joins only a control plane this harness started")
        self.controlplane = controlplane
        self.registry = registry
        self.bin_dir = bin_dir
        self.name = NODE_NAME
        token = secrets.token_hex(3)
        self.cgroup_root = f"imagedrift-node-{token}"
        self.bridge = f"idnode{token}"
        self.workdir: Path | None = None
        self.processes: dict[str, ManagedProcess] = {}
        self.startup_seconds: float | None = None
        self.pause_image = ""
        self._binaries: dict[str, Path] = {}
        self._baseline_links: set[str] = set()
        self._baseline_netns: set[str] = set()
        self._baseline_paths: set[str] = set()
        self._mount_ns: str | None = None
        self._binding_created = False
        self._api_client: k8s.ApiClient | None = None

    # -- public API -----------------------------------------------------------------------

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> RealNode:
        """Start containerd and the kubelet; return once the node is Ready and untainted."""
        started = time.monotonic()
        bin_dir = self.bin_dir or find_node_bin_dir()
        self._binaries = preflight(bin_dir)
        self._baseline_links = _links()
        self._baseline_netns = _named_netns()
        self._baseline_paths = {path for path in HOST_PATHS if os.path.lexists(path)}
        self.workdir = Path(tempfile.mkdtemp(prefix="imagedrift-node-"))
        try:
            self._start(started)
        except BaseException as exc:
            self.stop(check=False, keep_files=True)
            exc.add_note(f"node files and logs kept in {self.workdir}")
            raise
        return self

    def stop(self, *, check: bool = True, keep_files: bool = False) -> None:
        """Tear everything down; with ``check``, HarnessError if anything is left."""
        with contextlib.suppress(Exception):
            self._delete_pods()
        for name in ("kubelet", "containerd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop(grace=10.0)
        self._kill_namespace()
        self._kill_cgroups()
        holder = self.processes.pop("node-namespace", None)
        if holder is not None:
            holder.stop(grace=5.0)
        if self.bridge in _links():
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)
        self._remove_cgroups()
        if self._binding_created:
            with contextlib.suppress(Exception):
                self._rbac().delete_cluster_role_binding(NODE_ROLE_BINDING)
            with contextlib.suppress(Exception):
                self._core().delete_node(self.name)
            self._binding_created = False
        if self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]
            self._api_client = None
        # The kernel frees a pod's netns, and with it its veth, once the last reference
        # (the namespace's mounts) is gone: give that a moment before calling it left over.
        deadline = time.monotonic() + LEFTOVER_GRACE
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.leftovers()
        if self.workdir is not None and not keep_files and not left:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if check and left:
            raise HarnessError(
                "the real node left behind:\n- "
                + "\n- ".join(left)
                + f"\n(files in {self.workdir})"
            )

    def leftovers(self) -> list[str]:
        """Everything of this node still on the machine: mounts, processes, links,
        network namespaces, cgroups and host paths. Empty after a clean ``stop()``."""
        found: list[str] = []
        run = str(self.workdir) if self.workdir else None
        with contextlib.suppress(OSError):
            for line in Path("/proc/mounts").read_text().splitlines():
                fields = line.split()
                if len(fields) > 1 and (
                    (run and fields[1].startswith(run)) or self.cgroup_root in fields[1]
                ):
                    found.append(f"mount {fields[1]}")
        for pid in _pids():
            if pid == os.getpid():
                continue
            if self._mount_ns and _mount_ns(pid) == self._mount_ns:
                found.append(f"process {pid} in the node's mount namespace ({_comm(pid)})")
            elif self.cgroup_root in _read(f"/proc/{pid}/cgroup"):
                found.append(f"process {pid} in the node's cgroups ({_comm(pid)})")
            elif run and run in _read(f"/proc/{pid}/cmdline").replace("\0", " "):
                found.append(f"process {pid} started for the node ({_comm(pid)})")
        # The bridge, and the host ends of pod veths (they outlive the bridge if a pod's
        # network namespace does); a veth on another run's bridge is that run's.
        for link in sorted(_links() - self._baseline_links):
            if link == self.bridge or (
                link.startswith("veth") and _master(link) in (None, self.bridge)
            ):
                found.append(f"network link {link}")
        for netns in sorted(_named_netns() - self._baseline_netns):
            found.append(f"network namespace {netns}")
        for path in HOST_PATHS:
            if os.path.lexists(path) and path not in self._baseline_paths:
                found.append(f"host path {path}")
        for directory in self._cgroup_dirs():
            if directory.exists():
                found.append(f"cgroup {directory}")
        return found

    def api_pods(self) -> list[k8s.V1Pod]:
        """Every pod bound to this node, in every namespace."""
        pods = self._core().list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}")
        return list(pods.items)

    # -- start ---------------------------------------------------------------------------

    def _start(self, started: float) -> None:
        run = _require(self.workdir)
        logs = run / "logs"
        for sub in ("var-lib", "var-log", "sysctl", "cni/net.d", "cni/ipam", "certs.d", "pods"):
            (run / sub).mkdir(parents=True, exist_ok=True)

        # Credentials: a node client certificate from the cluster's CA, and the binding
        # that gives the group system:nodes the system:node role (RBAC mode, no Node
        # authorizer).
        kubeconfig = self._node_kubeconfig(run)
        self._bind_node_role()

        # Images: the sandbox image in the loopback registry, reached over plain HTTP.
        with self.registry.client() as client:
            self.pause_image = push_pause(client)
        host = self.registry.host
        hosts_dir = run / "certs.d" / host
        hosts_dir.mkdir(parents=True, exist_ok=True)
        (hosts_dir / "hosts.toml").write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        # Docker Hub's short names (nginx:1.25 is docker.io/library/nginx:1.25) are pulled
        # through the loopback registry as through a mirror, and only there: the server is
        # the registry itself, so nothing is ever asked of Docker Hub.
        hub_dir = run / "certs.d" / "docker.io"
        hub_dir.mkdir(parents=True, exist_ok=True)
        (hub_dir / "hosts.toml").write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )

        # Pod network: a bridge with no address, no gateway, no masquerade; written before
        # containerd starts (a half-written file is read and refused).
        conflist = {
            "cniVersion": "1.0.0",
            "name": "imagedrift-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "dataDir": str(run / "cni" / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        tmp = run / "cni" / "net.d" / "10-imagedrift.conflist.tmp"
        tmp.write_text(json.dumps(conflist, indent=2))
        tmp.rename(tmp.with_suffix(""))

        for key, value in KERNEL_SETTINGS.items():
            (run / "sysctl" / key.replace("/", "-")).write_text(value + "\n")
        self._create_cgroups()

        # The node's mount namespace, held by a sleeping process; containerd and the
        # kubelet join it with nsenter (which execs: the PID is the daemon's own).
        ready = run / "namespace-ready"
        script = "\n".join(
            [
                "set -e",
                *(
                    f"mount --bind {run / 'sysctl' / key.replace('/', '-')} /proc/sys/{key}"
                    for key in KERNEL_SETTINGS
                ),
                f"mount --bind {run / 'var-lib'} /var/lib",
                f"mount --bind {run / 'var-log'} /var/log",
                "mount -t tmpfs -o mode=755 tmpfs /run",
                f"touch {ready}",
                "exec sleep 2147483647",
            ]
        )
        holder = ManagedProcess(
            "node-namespace",
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script],
            logs,
        )
        self.processes["node-namespace"] = holder
        self._wait(ready.exists, what="the node's mount namespace", timeout=15)
        self._mount_ns = _mount_ns(holder.pid)
        enter = ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", "--"]

        config = run / "containerd.toml"
        config.write_text(self._containerd_config(run))
        socket = run / "containerd" / "containerd.sock"
        self.processes["containerd"] = ManagedProcess(
            "containerd",
            [*enter, str(self._binaries["containerd"]), f"--config={config}", "--log-level=info"],
            logs,
            env={"PATH": f"{self._binaries['containerd'].parent}:{os.environ.get('PATH', '')}"},
        )
        self._wait(socket.exists, what="containerd's socket", timeout=START_TIMEOUT)

        kubelet_config = run / "kubelet.yaml"
        kubelet_config.write_text(yaml.safe_dump(self._kubelet_config(run, socket)))
        self.processes["kubelet"] = ManagedProcess(
            "kubelet",
            [
                *enter,
                str(self._binaries["kubelet"]),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={run / 'kubelet'}",
                f"--cert-dir={run / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                "--v=1",
            ],
            logs,
        )
        self._wait(self._ready, what=f"node {self.name} Ready and untainted", timeout=START_TIMEOUT)
        self.startup_seconds = time.monotonic() - started

    def _node_kubeconfig(self, run: Path) -> Path:
        pki = _require(self.controlplane.pki)
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise HarnessError("the cluster CA's key is not an EC key")
        ca = Authority(
            cert,
            key,
            cert.not_valid_before_utc,
            min(
                cert.not_valid_after_utc,
                datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2),
            ),
        )
        node_cert, node_key = ca.issue(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{self.name}"),
                ]
            ),
            ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return write_kubeconfig(
            run / "node.kubeconfig",
            server=_require(self.controlplane.server),
            ca_pem=pki.ca_cert.read_bytes(),
            user={
                "client-certificate-data": _b64(pem_cert(node_cert)),
                "client-key-data": _b64(pem_key(node_key)),
            },
        )

    def _bind_node_role(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        binding = client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=NODE_ROLE_BINDING),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="system:node"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="Group", name="system:nodes", api_group="rbac.authorization.k8s.io"
                )
            ],
        )
        try:
            self._rbac().create_cluster_role_binding(binding)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._binding_created = True

    def _containerd_config(self, run: Path) -> str:
        state = run / "containerd"
        sockets = run / "containerd"
        cni = run / "cni"
        return f"""\
version = 4
root = '{run / "containerd-root"}'
state = '{state}'
disabled_plugins = [
  'io.containerd.internal.v1.opt',
  'io.containerd.nri.v1.nri',
  'io.containerd.image-verifier.v1.bindir',
]

[plugins.'io.containerd.server.v1.grpc']
  address = '{sockets / "containerd.sock"}'

[plugins.'io.containerd.server.v1.ttrpc']
  address = '{sockets / "containerd.sock.ttrpc"}'

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = '{run / "s"}'

[plugins.'io.containerd.transfer.v1.local']
  config_path = '{run / "certs.d"}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{self.pause_image}'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '{run / "certs.d"}'

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN_DIR}']
    conf_dir = '{cni / "net.d"}'
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{RUNC}'
        Root = '{run / "runc"}'
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '{LOOPBACK}'
  stream_server_port = '0'
"""

    def _kubelet_config(self, run: Path, socket: Path) -> dict[str, Any]:
        pki = _require(self.controlplane.pki)
        endpoint = f"unix://{socket}"
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": LOOPBACK,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": LOOPBACK,
            "healthzPort": free_port(),
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": True,
            "cgroupRoot": f"/{self.cgroup_root}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "protectKernelDefaults": False,
            "podLogsDir": str(run / "pods"),
            "resolvConf": "",
            "staticPodPath": "",
            "authentication": {
                "x509": {"clientCAFile": str(pki.ca_cert)},
                "webhook": {"enabled": False},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "serializeImagePulls": False,
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
        }

    def _create_cgroups(self) -> None:
        for controller in CGROUP_CONTROLLERS:
            directory = CGROUP_V1 / controller / self.cgroup_root
            directory.mkdir(exist_ok=True)
            if controller == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    value = (CGROUP_V1 / controller / name).read_text()
                    (directory / name).write_text(value)

    def _ready(self) -> bool:
        node = self._core().read_node(self.name)
        conditions = (node.status.conditions if node.status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        taints = (node.spec.taints if node.spec else None) or []
        return ready and not any(
            t.effect in ("NoSchedule", "NoExecute") and t.key != TAINT_KEY for t in taints
        )

    def _wait(self, probe: Any, *, what: str, timeout: float) -> Any:
        return wait_while_alive(self.processes.values(), probe, what=what, timeout=timeout)

    # -- stop ----------------------------------------------------------------------------

    def _delete_pods(self) -> None:
        """Cordon the node (a Deployment's replacement pods stay Pending), delete every
        pod on it and wait until the kubelet has killed them and confirmed."""
        from kubernetes.client.exceptions import ApiException

        if "kubelet" not in self.processes or not self.processes["kubelet"].alive():
            return
        core = self._core()
        core.patch_node(self.name, {"spec": {"unschedulable": True}})
        for pod in self.api_pods():
            if pod.metadata is None or not pod.metadata.name or not pod.metadata.namespace:
                continue
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1
                )
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: not self.api_pods(),
                what=f"the pods on node {self.name} to go",
                timeout=POD_GONE_TIMEOUT,
                interval=0.5,
            )

    def _kill_namespace(self) -> None:
        """SIGKILL whatever still runs in the node's mount namespace (shims) except the
        holder, which goes last."""
        if self._mount_ns is None:
            return
        holder = self.processes.get("node-namespace")
        for _ in range(3):
            victims = [
                pid
                for pid in _pids()
                if _mount_ns(pid) == self._mount_ns and (holder is None or pid != holder.pid)
            ]
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    def _cgroup_dirs(self) -> list[Path]:
        return [CGROUP_V1 / c / self.cgroup_root for c in CGROUP_CONTROLLERS] + [
            CGROUP_V1 / "unified" / self.cgroup_root
        ]

    def _kill_cgroups(self) -> None:
        """SIGKILL container processes that outlived their shims (reparented to PID 1,
        each in its own mount namespace): whatever the run's cgroups still list."""
        for _ in range(5):
            pids: set[int] = set()
            for root in self._cgroup_dirs():
                for procs in _walk(root, "cgroup.procs"):
                    for line in _read(str(procs)).split():
                        with contextlib.suppress(ValueError):
                            pids.add(int(line))
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.3)

    def _remove_cgroups(self) -> None:
        for root in self._cgroup_dirs():
            if not root.exists():
                continue
            directories = sorted(
                (p.parent for p in _walk(root, "cgroup.procs")),
                key=lambda p: len(p.parts),
                reverse=True,
            )
            for directory in directories:
                for _ in range(20):
                    try:
                        directory.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)

    # -- clients --------------------------------------------------------------------------

    def _core(self) -> k8s.CoreV1Api:
        from kubernetes import client

        return client.CoreV1Api(self._api())

    def _rbac(self) -> k8s.RbacAuthorizationV1Api:
        from kubernetes import client

        return client.RbacAuthorizationV1Api(self._api())

    def _api(self) -> k8s.ApiClient:
        if self._api_client is None:
            self._api_client = self.controlplane.api_client()
        return self._api_client


# -- small helpers -------------------------------------------------------------------------


def _require(value: Any) -> Any:
    if value is None:
        raise HarnessError("the real node is not started")
    return value


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _comm(pid: int) -> str:
    return _read(f"/proc/{pid}/comm").strip()


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _master(link: str) -> str | None:
    """The bridge ``link`` is enslaved to, if any."""
    try:
        return Path(os.readlink(f"/sys/class/net/{link}/master")).name
    except OSError:
        return None


def _named_netns() -> set[str]:
    """Network namespaces pinned under the host's netns directories (``ip netns``)."""
    found: set[str] = set()
    for directory in ("/run/netns", "/var/run/netns"):
        with contextlib.suppress(OSError):
            found.update(f"{directory}/{entry}" for entry in os.listdir(directory))
    return found


def _walk(root: Path, name: str) -> Iterator[Path]:
    """``root/**/name`` without following symlinks; nothing when ``root`` is gone."""
    if not root.is_dir():
        return
    for directory, _, files in os.walk(root):
        if name in files:
            yield Path(directory) / name


def placement() -> dict[str, Any]:
    """Pod spec fields that put a pod on the real node: ``V1PodSpec(**placement(), ...)``."""
    from kubernetes import client

    return {
        "node_selector": {"kubernetes.io/hostname": NODE_NAME},
        "tolerations": [client.V1Toleration(key=TAINT_KEY, operator="Exists", effect="NoSchedule")],
    }


__all__ = ["ENV_NODE_BIN", "NODE_NAME", "TAINT_KEY", "RealNode", "find_node_bin_dir", "placement"]

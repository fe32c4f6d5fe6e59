"""The host's loopback services, answered on 127.0.0.1 inside pods on the real node.

Pod Security "restricted" forbids ``hostNetwork`` (the API server says so:
``violates PodSecurity "restricted:latest": host namespaces (hostNetwork=true)``), and here
the API server and the registry listen on the host's 127.0.0.1 only, while a pod's
127.0.0.1 is its own. ``PodLoopback`` makes chosen host ports answer on 127.0.0.1 in a
pod's network namespace: a short-lived thread enters the namespace (``setns(2)``, which
changes only that thread), creates a listening socket there and ends; the socket stays in
the namespace it was made in, and a relay in the harness's own namespace passes every
connection on to the same port of the host's loopback. No address, route or link is added
for it, and the pod still sees the API server's certificate name (127.0.0.1).

The other direction, the kubelet's HTTP probes and the API server's service proxy reaching
a pod's address, needs the host to reach the pod network: ``pod_network_gateway()`` gives
the node's bridge the pod network's gateway address (the first of the /24, which the IPAM
never hands out) for as long as it is needed, as the CNI bridge plugin's ``isGateway``
would, and no more: pods get no route beyond their /24, nothing is forwarded or
masqueraded, so no packet leaves the machine; without it, packets to a pod address would
follow the host's default route out.

``follow_pods()`` attaches every pod of a label selector on the node as soon as its sandbox
runs, and lets go of a pod once it is gone (a listening socket keeps its namespace alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tests.harness.node import CGROUP_V1, POD_SUBNET, RealNode
from tests.harness.procs import LOOPBACK, HarnessError

if TYPE_CHECKING:
    from tests.harness.controlplane import Kube

CLONE_NEWNET: Final = 0x40000000
RELAY_CHUNK: Final = 65536
FOLLOW_INTERVAL: Final = 0.2
FOLLOW_LIMIT: Final = 3600.0  # seconds a follower may run (a test's whole span)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class PodLoopback:
    """Listeners on 127.0.0.1:``ports`` inside pods' network namespaces, each connection
    relayed to the same port on the host's 127.0.0.1."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = tuple(ports)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pod-loopback", daemon=True
        )
        self._servers: dict[str, list[asyncio.AbstractServer]] = {}
        self._connections: set[asyncio.StreamWriter] = set()
        self.relayed = 0  # connections relayed so far, all pods
        self._thread.start()

    def __enter__(self) -> PodLoopback:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def attached(self) -> set[str]:
        return set(self._servers)

    def attach(self, key: str, pid: int) -> None:
        """Listen on 127.0.0.1:<each port> in the network namespace of process ``pid``."""
        if key in self._servers:
            return
        host_netns = os.readlink("/proc/self/ns/net")
        if os.readlink(f"/proc/{pid}/ns/net") == host_netns:
            raise HarnessError(f"process {pid} runs in the host's network namespace")
        sockets = _sockets_in_netns(pid, self.ports)
        try:
            servers = [
                asyncio.run_coroutine_threadsafe(self._serve(sock, port), self._loop).result(10)
                for sock, port in zip(sockets, self.ports, strict=True)
            ]
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self._servers[key] = servers

    def detach(self, key: str) -> None:
        """Close ``key``'s listeners (its namespace can go once the pod's processes have)."""
        servers = self._servers.pop(key, [])
        if servers:
            asyncio.run_coroutine_threadsafe(self._close(servers), self._loop).result(10)

    def close(self) -> None:
        """Close every listener and relayed connection and stop the relay thread."""
        for key in list(self._servers):
            self.detach(key)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._drop_connections(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    # -- the relay (runs on the loop thread, in the host's network namespace) -----------

    async def _serve(self, sock: socket.socket, port: int) -> asyncio.AbstractServer:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.relayed += 1
            self._connections.add(writer)
            try:
                up_reader, up_writer = await asyncio.open_connection(LOOPBACK, port)
            except OSError:
                writer.close()
                self._connections.discard(writer)
                return
            self._connections.add(up_writer)
            await asyncio.gather(
                _pump(reader, up_writer), _pump(up_reader, writer), return_exceptions=True
            )
            for end in (writer, up_writer):
                self._connections.discard(end)

        return await asyncio.start_server(relay, sock=sock)

    async def _close(self, servers: list[asyncio.AbstractServer]) -> None:
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _drop_connections(self) -> None:
        for writer in list(self._connections):
            writer.close()
        self._connections.clear()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _sockets_in_netns(pid: int, ports: Sequence[int]) -> list[socket.socket]:
    """Listening TCP sockets on 127.0.0.1:``ports``, made inside ``pid``'s network
    namespace by a thread of their own (which ends there: the caller's threads never
    change namespace)."""
    made: list[socket.socket] = []
    failure: list[BaseException] = []

    def enter_and_listen() -> None:
        try:
            with open(f"/proc/{pid}/ns/net") as netns:
                _setns(netns.fileno())
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((LOOPBACK, port))
                sock.listen(64)
                sock.setblocking(False)
                made.append(sock)
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=enter_and_listen, name=f"netns-{pid}")
    worker.start()
    worker.join(10)
    if failure or worker.is_alive() or len(made) != len(ports):
        for sock in made:
            sock.close()
        raise HarnessError(f"could not listen in the network namespace of {pid}: {failure}")
    return made


# -- which process runs in a pod's namespace ------------------------------------------


def pod_process(node: RealNode, uid: str) -> int | None:
    """A process of pod ``uid`` on ``node`` (its sandbox first), from the node's cgroups;
    None while the pod has none."""
    root = CGROUP_V1 / "pids" / node.cgroup_root
    if not root.is_dir():
        return None
    wanted = f"pod{uid}"
    for directory, subdirectories, _ in os.walk(root):
        if Path(directory).name != wanted:
            continue
        for sub in subdirectories:
            with contextlib.suppress(OSError):
                for line in (Path(directory) / sub / "cgroup.procs").read_text().split():
                    pid = int(line)
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                            return pid
        subdirectories.clear()
    return None


@contextlib.contextmanager
def follow_pods(
    forward: PodLoopback, kube: Kube, node: RealNode, namespace: str, selector: str
) -> Iterator[Callable[[], set[str]]]:
    """Attach every pod of ``selector`` in ``namespace`` on ``node`` to ``forward`` as soon
    as it has a process, detach it once it is gone from the API; yields a function that
    returns the UIDs attached now. Bounded by ``FOLLOW_LIMIT`` seconds."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        deadline = time.monotonic() + FOLLOW_LIMIT
        for _ in range(int(FOLLOW_LIMIT / FOLLOW_INTERVAL) + 1):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                pods = kube.core.list_namespaced_pod(
                    namespace,
                    label_selector=selector,
                    field_selector=f"spec.nodeName={node.name}",
                ).items
                present = {str(pod.metadata.uid) for pod in pods if pod.metadata}
                for uid in forward.attached() - present:
                    forward.detach(uid)
                for uid in present - forward.attached():
                    pid = pod_process(node, uid)
                    if pid is not None:
                        forward.attach(uid, pid)
            except Exception as exc:  # reported when the follower stops
                errors.append(exc)
            stop.wait(FOLLOW_INTERVAL)

    thread = threading.Thread(target=run, name="follow-pods", daemon=True)
    thread.start()
    try:
        yield forward.attached
    finally:
        stop.set()
        thread.join(10)


# -- the host side of the pod network ---------------------------------------------------


def gateway_address() -> str:
    """The pod network's gateway address, with its prefix: ``10.247.0.1/24``."""
    network = ipaddress.ip_network(POD_SUBNET)
    return f"{next(network.hosts())}/{network.prefixlen}"


@contextlib.contextmanager
def pod_network_gateway(node: RealNode) -> Iterator[str]:
    """The node's bridge holds the pod network's gateway address while this lasts (the
    bridge is made first if no pod has made it yet; the CNI plugin adopts it, and the
    node's stop() deletes it). Yields the address."""
    address = gateway_address()
    if not Path(f"/sys/class/net/{node.bridge}").exists():
        _ip("link", "add", "name", node.bridge, "type", "bridge")
    _ip("link", "set", node.bridge, "up")
    _ip("addr", "add", address, "dev", node.bridge)
    try:
        yield address.split("/", 1)[0]
    finally:
        if Path(f"/sys/class/net/{node.bridge}").exists():
            _ip("addr", "del", address, "dev", node.bridge, check=False)


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


__all__ = ["PodLoopback", "follow_pods", "gateway_address", "pod_network_gateway", "pod_process"]

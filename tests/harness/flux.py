"""Flux's own source-controller and kustomize-controller beside the harness's control plane.

``Flux(controlplane).start()`` applies the controllers' CRDs server-side (waiting for
Established), starts both controllers as local processes on the admin kubeconfig
(``KUBECONFIG``), every listener on a port of its own on 127.0.0.1, leader election off,
watching all namespaces, and returns once both answer ``/readyz``. ``stop()`` deletes the
Flux objects still in the cluster while the controllers can still clear their finalizers
(bounded), then stops both with SIGTERM. Logs stay in files (``log_paths``) for failure
reports.

Binaries: ``source-controller`` and ``kustomize-controller`` from
``tests/controlplane/build.sh flux`` (cached by version, the CRDs of the same module
versions in ``../crd`` beside the bin directory), or ``IMAGEDRIFT_FLUX_BIN``: a directory
of prebuilt binaries laid out the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

from tests.harness.controlplane import ControlPlane, iter_yaml_documents, run_build
from tests.harness.procs import (
    LOOPBACK,
    HarnessError,
    ManagedProcess,
    free_port,
    wait_for,
    wait_while_alive,
)

T = TypeVar("T")

ENV_FLUX_BIN: Final = "IMAGEDRIFT_FLUX_BIN"
FLUX_BINARIES: Final = ("source-controller", "kustomize-controller")
SOURCE_GROUP: Final = "source.toolkit.fluxcd.io"
KUSTOMIZE_GROUP: Final = "kustomize.toolkit.fluxcd.io"
# The objects stop() clears away: (group, version, plural).
FLUX_OBJECTS: Final = (
    (KUSTOMIZE_GROUP, "v1", "kustomizations"),
    (SOURCE_GROUP, "v1", "gitrepositories"),
)
# A cold start (page cache empty, 140 MB binaries) is slower than the ~8 s of a warm one.
READY_TIMEOUT: Final = 90.0
CRD_TIMEOUT: Final = 60.0
CLEANUP_TIMEOUT: Final = 60.0
STOP_GRACE: Final = 15.0


def find_flux_bin_dir() -> Path:
    """``$IMAGEDRIFT_FLUX_BIN`` or the cached build of ``build.sh flux`` (built if missing)."""
    configured = os.environ.get(ENV_FLUX_BIN)
    if configured:
        return Path(configured).expanduser()
    return run_build("flux", f"or set {ENV_FLUX_BIN} to a directory of prebuilt binaries")


class Flux:
    """source-controller + kustomize-controller for ``controlplane``; see the module doc.

    After ``start()``: ``processes`` (name -> ManagedProcess), ``storage_url`` (where
    source-controller serves artifacts), ``health_urls`` (name -> /readyz URL),
    ``startup_seconds``, ``crd_names``.
    """

    def __init__(self, controlplane: ControlPlane, *, bin_dir: Path | None = None) -> None:
        self.controlplane = controlplane
        self.bin_dir = bin_dir
        self.workdir: Path | None = None
        self.processes: dict[str, ManagedProcess] = {}
        self.health_urls: dict[str, str] = {}
        self.storage_url = ""
        self.crd_names: list[str] = []
        self.startup_seconds: float | None = None

    def __enter__(self) -> Flux:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- public API -----------------------------------------------------------------------

    def start(self) -> Flux:
        """Install the CRDs and start both controllers; return once both are ready."""
        if self.processes:
            return self
        started = time.monotonic()
        bin_dir = self.bin_dir or find_flux_bin_dir()
        binaries = _require(bin_dir)
        kubeconfig = self.controlplane.kubeconfig
        if kubeconfig is None:
            raise HarnessError("Flux needs a started control plane")
        self.workdir = Path(tempfile.mkdtemp(prefix="imagedrift-flux-"))
        try:
            self.install_crds(bin_dir.parent / "crd")
            self._start_controllers(binaries, kubeconfig)
        except BaseException as exc:
            self.stop(keep_files=True)
            exc.add_note(f"Flux logs kept in {self.workdir}")
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, *, keep_files: bool = False) -> list[str]:
        """Delete leftover Flux objects, SIGTERM both controllers (bounded); returns what
        went wrong, if anything. Log files are removed unless ``keep_files`` or trouble."""
        trouble: list[str] = []
        if self.processes and all(p.alive() for p in self.processes.values()):
            with contextlib.suppress(Exception):
                trouble += self._delete_objects()
        for name in reversed(list(self.processes)):
            problem = self.processes.pop(name).stop(grace=STOP_GRACE)
            if problem:
                trouble.append(problem)
        if self.workdir is not None and not keep_files and not trouble:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return trouble

    def check_alive(self) -> None:
        """HarnessError with the log tail if a controller has exited."""
        for proc in self.processes.values():
            proc.check_alive()

    @property
    def log_paths(self) -> dict[str, Path]:
        return {name: proc.log_path for name, proc in self.processes.items()}

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every controller's log, for failure messages."""
        return "\n".join(
            f"--- {name} ({proc.log_path}):\n{proc.log_tail(lines)}"
            for name, proc in self.processes.items()
        )

    def wait(self, probe: Callable[[], T | None], *, what: str, timeout: float) -> T:
        """``wait_for`` that fails at once if a controller dies and reports both logs'
        tails on a timeout."""
        return wait_while_alive(self.processes.values(), probe, what=what, timeout=timeout)

    def install_crds(self, crd_dir: Path) -> None:
        """Apply every CRD in ``crd_dir`` server-side and wait until each is Established."""
        files = sorted(crd_dir.glob("*.yaml"))
        if not files:
            raise HarnessError(
                f"no Flux CRDs in {crd_dir} (tests/controlplane/build.sh flux copies them there)"
            )
        self.crd_names = [
            str(doc["metadata"]["name"])
            for _, doc in iter_yaml_documents(files)
            if doc.get("kind") == "CustomResourceDefinition"
        ]
        # Flux's CRDs are too large for client-side apply's last-applied annotation.
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=imagedrift-test"]
        for path in files:
            args += ["-f", str(path)]
        self.controlplane.kubectl(*args, timeout=CRD_TIMEOUT)
        # kubectl wait fails at once, instead of waiting, while a CRD has no conditions yet.
        wait_for(
            lambda: (
                self.controlplane.kubectl(
                    "wait",
                    "--for=condition=Established",
                    "--timeout=10s",
                    *(f"crd/{name}" for name in self.crd_names),
                    check=False,
                    timeout=20,
                ).returncode
                == 0
            ),
            what=f"Flux CRDs Established ({', '.join(self.crd_names)})",
            timeout=CRD_TIMEOUT,
            interval=0.5,
        )

    # -- internals ------------------------------------------------------------------------

    def _start_controllers(self, binaries: dict[str, Path], kubeconfig: Path) -> None:
        workdir = _require_dir(self.workdir)
        logs = workdir / "logs"
        storage = workdir / "storage"
        storage.mkdir()
        env = {
            "KUBECONFIG": str(kubeconfig),
            # Anything a controller keeps in a home directory stays in the run's.
            "HOME": str(workdir),
            "RUNTIME_NAMESPACE": "flux-system",
            "NO_PROXY": LOOPBACK,
            "no_proxy": LOOPBACK,
        }
        storage_port, source_metrics, source_health = free_port(), free_port(), free_port()
        kustomize_metrics, kustomize_health = free_port(), free_port()
        self.storage_url = f"http://{LOOPBACK}:{storage_port}"
        common = ["--enable-leader-election=false", "--watch-all-namespaces=true"]
        self._spawn(
            "source-controller",
            binaries,
            [
                *common,
                f"--storage-path={storage}",
                f"--storage-addr={LOOPBACK}:{storage_port}",
                # kustomize-controller downloads artifacts from this address.
                f"--storage-adv-addr={LOOPBACK}:{storage_port}",
                f"--metrics-addr={LOOPBACK}:{source_metrics}",
                f"--health-addr={LOOPBACK}:{source_health}",
            ],
            logs,
            env,
        )
        self._spawn(
            "kustomize-controller",
            binaries,
            [
                *common,
                f"--metrics-addr={LOOPBACK}:{kustomize_metrics}",
                f"--health-addr={LOOPBACK}:{kustomize_health}",
                # Only what the loopback git server serves: no remote bases from elsewhere.
                "--no-remote-bases=true",
                # A Kustomization made before its source has an artifact is looked at
                # again after this, instead of the default 30 s.
                "--requeue-dependency=2s",
            ],
            logs,
            env,
        )
        self.health_urls = {
            "source-controller": f"http://{LOOPBACK}:{source_health}/readyz",
            "kustomize-controller": f"http://{LOOPBACK}:{kustomize_health}/readyz",
        }
        for name, url in self.health_urls.items():
            self.wait(partial(_http_ok, url), what=f"{name} {url}", timeout=READY_TIMEOUT)

    def _spawn(
        self,
        name: str,
        binaries: dict[str, Path],
        args: list[str],
        logs: Path,
        env: dict[str, str],
    ) -> None:
        self.processes[name] = ManagedProcess(name, [str(binaries[name]), *args], logs, env=env)

    def _delete_objects(self) -> list[str]:
        """Delete every Kustomization and GitRepository and wait (bounded) until their
        finalizers are cleared; whatever is still there then loses its finalizers, so no
        namespace stays Terminating after the controllers are gone."""
        from kubernetes import client

        with self.controlplane.api_client() as api:
            custom = client.CustomObjectsApi(api)

            def remaining() -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = []
                for group, version, plural in FLUX_OBJECTS:
                    listing: Any = custom.list_cluster_custom_object(group, version, plural)
                    found += [
                        {**item, "_gvp": (group, version, plural)} for item in listing["items"]
                    ]
                return found

            for item in remaining():
                group, version, plural = item["_gvp"]
                meta = item["metadata"]
                with contextlib.suppress(client.ApiException):
                    custom.delete_namespaced_custom_object(
                        group, version, meta["namespace"], plural, meta["name"]
                    )
            try:
                wait_for(
                    lambda: not remaining(),
                    what="Flux objects deleted",
                    timeout=CLEANUP_TIMEOUT,
                    interval=0.5,
                )
                return []
            except TimeoutError:
                stuck = remaining()
                for item in stuck:
                    group, version, plural = item["_gvp"]
                    meta = item["metadata"]
                    with contextlib.suppress(client.ApiException):
                        custom.patch_namespaced_custom_object(
                            group,
                            version,
                            meta["namespace"],
                            plural,
                            meta["name"],
                            {"metadata": {"finalizers": None}},
                        )
                names = ", ".join(
                    f"{i['kind']} {i['metadata']['namespace']}/{i['metadata']['name']}"
                    for i in stuck
                )
                return [f"Flux did not clear the finalizers of {names} in {CLEANUP_TIMEOUT:.0f}s"]


def _require(bin_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in FLUX_BINARIES:
        path = bin_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path
        else:
            missing.append(name)
    if missing:
        raise HarnessError(
            f"missing Flux binaries {', '.join(missing)} in {bin_dir}; run "
            f"tests/controlplane/build.sh flux (needs Go) or set {ENV_FLUX_BIN}"
        )
    return found


def _require_dir(path: Path | None) -> Path:
    if path is None:
        raise HarnessError("Flux is not started")
    return path


def _http_ok(url: str) -> bool:
    # An empty ProxyHandler: loopback traffic never goes through a configured proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return bool(response.status == 200)


__all__ = ["ENV_FLUX_BIN", "FLUX_BINARIES", "Flux", "find_flux_bin_dir"]

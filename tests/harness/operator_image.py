"""The operator's own image, built from the repository's Dockerfile the way a user would,
without a daemon: ``buildah bud --isolation chroot`` (root) on this machine.

Public registries are unreachable here, so the Dockerfile's ``PYTHON_IMAGE`` build argument
names a local base made from Debian packages: ``debootstrap --variant=minbase`` of bookworm
(whose ``python3`` is 3.11, as ``python:3.11-slim``) with ``python3-venv``,
``python-is-python3`` and ``passwd``, from the apt mirror this machine is configured with.
The build's ``pip install --require-hashes`` reaches the package index over the host's
network with the host's CA bundle (bound read-only over the base's for the build's ``RUN``
steps only; the image keeps Debian's).

Both images live in a buildah store of their own under the cache
(``$IMAGEDRIFT_CACHE`` or ``~/.cache/imagedrift``, ``operator-image/``), never in the work
tree: the base is keyed by a hash of its package list, the operator image by a hash of
every file the build reads (Dockerfile, ``requirements/runtime.txt``, ``pyproject.toml``,
``README.md``, ``operator/``) and the base's key. A second run finds both and only pushes.
A file lock keeps two test workers from building the same image at once.

Nothing of a build stays mounted or running: debootstrap runs in a mount namespace of its
own, every buildah working container is removed, and ``leftovers()`` says what would be.

    image = build_operator_image()  # cached; .build_seconds says what it cost
    ref = push_operator_image(image, registry.host)  # 127.0.0.1:PORT/imagedrift/operator@...
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.harness.procs import HarnessError

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILDAH: Final = "buildah"
DEBOOTSTRAP: Final = "debootstrap"
SUITE: Final = "bookworm"
# What python:3.11-slim has that the Dockerfile uses: python (3.11) with venv, and
# groupadd/useradd; ca-certificates for pip's TLS during the build.
BASE_PACKAGES: Final = ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates")
BASE_NAME: Final = "localhost/imagedrift-test/python"
OPERATOR_NAME: Final = "localhost/imagedrift-test/operator"
REPOSITORY: Final = "imagedrift/operator"
# The files and folders the Dockerfile reads (.dockerignore keeps the rest out).
BUILD_INPUTS: Final = (
    "Dockerfile",
    ".dockerignore",
    "requirements/runtime.txt",
    "pyproject.toml",
    "README.md",
    "operator",
)
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
CA_IN_IMAGE: Final = "/etc/ssl/certs/ca-certificates.crt"
BASE_TIMEOUT: Final = 1200.0
BUILD_TIMEOUT: Final = 1800.0
PUSH_TIMEOUT: Final = 300.0


@dataclass(frozen=True)
class BuiltImage:
    """An image in the cache's buildah store: its name, whether this call built it (False:
    found in the cache), and the seconds the build took (the base's included)."""

    name: str
    built: bool
    build_seconds: float
    base: str
    base_built: bool
    base_seconds: float


def cache_dir() -> Path:
    """``$IMAGEDRIFT_CACHE/operator-image`` (default ``~/.cache/imagedrift/operator-image``),
    as tests/controlplane/build.sh picks its cache."""
    root = os.environ.get("IMAGEDRIFT_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagedrift"
    )
    return Path(root) / "operator-image"


def preflight() -> None:
    """HarnessError naming what this machine lacks to build the image."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("buildah with chroot isolation and debootstrap need root")
    for tool in (BUILDAH, DEBOOTSTRAP, "unshare", "tar"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not on PATH (scripts/install-system-deps.sh installs it)")
    if problems:
        raise HarnessError("cannot build the operator image:\n- " + "\n- ".join(problems))


def base_key(packages: Sequence[str] = BASE_PACKAGES, mirror: str | None = None) -> str:
    """The base image's cache key: suite, packages and mirror."""
    text = "\n".join([SUITE, "minbase", mirror or debian_mirror(), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def operator_key(base: str, root: Path = REPO_ROOT) -> str:
    """The operator image's cache key: every build input's path and content, and the base."""
    digest = hashlib.sha256(base.encode())
    for path in _input_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def build_operator_image(root: Path = REPO_ROOT) -> BuiltImage:
    """The operator image of ``root``'s current sources in the cache's store, built (and
    its base first) when missing."""
    preflight()
    started = time.monotonic()
    with _locked():
        base_tag = base_key()
        base = f"{BASE_NAME}:3.11-{base_tag}"
        base_built = not _exists(base)
        if base_built:
            _build_base(base)
        base_seconds = time.monotonic() - started
        name = f"{OPERATOR_NAME}:{operator_key(base_tag, root)}"
        built = not _exists(name)
        if built:
            _build_operator(name, base, root)
            _forget_other_builds(name)
    return BuiltImage(
        name=name,
        built=built,
        build_seconds=time.monotonic() - started,
        base=base,
        base_built=base_built,
        base_seconds=base_seconds,
    )


def push_operator_image(image: BuiltImage, registry_host: str) -> str:
    """Push ``image`` to the loopback registry over plain HTTP; return the reference by
    digest (``host/imagedrift/operator@sha256:...``), tagged with the cache key there."""
    tag = image.name.rsplit(":", 1)[1]
    with tempfile.TemporaryDirectory(prefix="imagedrift-push-") as scratch:
        digest_file = Path(scratch) / "digest"
        _buildah(
            "push",
            "--tls-verify=false",
            f"--digestfile={digest_file}",
            image.name,
            f"docker://{registry_host}/{REPOSITORY}:{tag}",
            timeout=PUSH_TIMEOUT,
        )
        digest = digest_file.read_text().strip()
    if not digest.startswith("sha256:"):
        raise HarnessError(f"buildah push wrote no digest for {image.name}: {digest!r}")
    return f"{registry_host}/{REPOSITORY}@{digest}"


def leftovers() -> list[str]:
    """Working containers and mounts of the cache's buildah store: empty after every build."""
    found: list[str] = []
    result = _buildah("containers", "--all", "--quiet", check=False)
    found.extend(f"buildah container {line}" for line in result.stdout.split() if line)
    store = str(cache_dir())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1].startswith(store):
                found.append(f"mount {fields[1]}")
    return found


# -- the base ----------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (deb822 or one-line sources), else
    deb.debian.org."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                if line.startswith("URIs:"):
                    for uri in line.split()[1:]:
                        if uri.rstrip("/").endswith("/debian"):
                            return uri.rstrip("/")
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3 and fields[0] == "deb":
                    uri = next((f for f in fields[1:] if "://" in f), "")
                    if uri.rstrip("/").endswith("/debian"):
                        return uri.rstrip("/")
    return DEFAULT_MIRROR


def _build_base(name: str) -> None:
    """debootstrap a minbase bookworm with ``BASE_PACKAGES`` and commit it as ``name``."""
    with tempfile.TemporaryDirectory(prefix="base-", dir=_scratch()) as scratch:
        rootfs = Path(scratch) / "rootfs"
        # A mount namespace of its own: the /proc and /sys debootstrap mounts in the target
        # go with it, even when debootstrap fails half-way.
        _run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                DEBOOTSTRAP,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                debian_mirror(),
            ],
            what="debootstrap of the Python base",
            timeout=BASE_TIMEOUT,
        )
        # What an image does not need: downloaded packages, apt's lists, device nodes.
        for pattern in (
            "var/cache/apt/archives/*.deb",
            "var/cache/apt/*.bin",
            "var/lib/apt/lists/*",
        ):
            for path in rootfs.glob(pattern):
                if path.is_file():
                    path.unlink()
        archive = Path(scratch) / "rootfs.tar"
        _run(
            [
                "tar",
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(rootfs),
                "-cf",
                str(archive),
                ".",
            ],
            what="the base's root filesystem archive",
            timeout=300,
        )
        with _container("scratch") as container:
            _buildah("add", container, str(archive), "/", timeout=300)
            _buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                container,
            )
            _buildah("commit", "--quiet", container, name, timeout=300)


# -- the operator image ------------------------------------------------------------------


def _build_operator(name: str, base: str, root: Path) -> None:
    ca = _host_ca_bundle()
    _buildah(
        "bud",
        "--isolation=chroot",
        "--pull-never",
        "--layers=false",
        f"--build-arg=PYTHON_IMAGE={base}",
        # pip in the build verifies the index with the host's CA bundle.
        f"--volume={ca}:{CA_IN_IMAGE}:ro",
        f"--file={root / 'Dockerfile'}",
        f"--tag={name}",
        str(root),
        timeout=BUILD_TIMEOUT,
        what="buildah bud of the operator image",
    )


def _host_ca_bundle() -> str:
    """The CA bundle the host's pip verifies with (PIP_CERT, then OpenSSL's default)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        CA_IN_IMAGE,
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise HarnessError("no CA bundle on this machine for pip in the image build")


# -- buildah and files -------------------------------------------------------------------


def _store_args() -> list[str]:
    store = cache_dir()
    return [f"--root={store / 'storage'}", f"--runroot={store / 'run'}", "--storage-driver=overlay"]


def _buildah(
    *args: str, timeout: float = 120.0, check: bool = True, what: str | None = None
) -> subprocess.CompletedProcess[str]:
    return _run(
        [BUILDAH, *_store_args(), *args],
        what=what or f"buildah {args[0]}",
        timeout=timeout,
        check=check,
    )


def _run(
    argv: Sequence[str], *, what: str, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what} did not finish within {timeout:.0f}s") from exc
    if check and result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-30:])
        raise HarnessError(f"{what} failed with code {result.returncode}:\n{tail}")
    return result


def _exists(name: str) -> bool:
    return _buildah("inspect", "--type=image", name, check=False).returncode == 0


def _forget_other_builds(keep: str) -> None:
    """Remove the operator images of earlier sources: the cache holds one, not one per edit."""
    listed = _buildah("images", "--format={{.Name}}:{{.Tag}}", check=False)
    for image in listed.stdout.split():
        if image != keep and image.startswith(f"{OPERATOR_NAME}:"):
            _buildah("rmi", image, check=False)


@contextlib.contextmanager
def _container(image: str) -> Iterator[str]:
    """A buildah working container from ``image``, removed afterwards whatever happens."""
    container = _buildah("from", "--quiet", "--pull-never", image).stdout.strip()
    try:
        yield container
    finally:
        _buildah("rm", container, check=False)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per cache (parallel workers wait, then find the image)."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _scratch() -> Path:
    directory = cache_dir() / "tmp"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _input_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in BUILD_INPUTS:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file()
                and "__pycache__" not in p.parts
                and not any(part.endswith(".egg-info") for part in p.parts)
                and p.suffix != ".pyc"
            )
    return sorted(files)


__all__ = [
    "BASE_PACKAGES",
    "BuiltImage",
    "build_operator_image",
    "cache_dir",
    "leftovers",
    "push_operator_image",
]

"""A real git server over SSH on 127.0.0.1 for GitOps tests: OpenSSH's ``sshd`` (Debian
``openssh-server``), started by the harness in the foreground, never the system service.

``SshGitServer(root)`` keeps the bare repositories under ``root`` (``<name>.git``) and,
once ``start()``-ed, an ``sshd`` of its own on a free loopback port. Everything that
``sshd`` reads is made in a private directory under ``root``: an ed25519 host key, the
``sshd_config`` (``ListenAddress 127.0.0.1``, no PAM, no password or keyboard-interactive
login, no forwarding, no terminal) and ``authorized_keys`` holding one ed25519 client key
generated for the session.

Who logs in: ``sshd`` only lets a real unix user in, so the login is the user running the
tests (root included: ``PermitRootLogin prohibit-password``, so a key is the only way in),
and ``AllowUsers`` names that user alone. Every session is forced (``ForceCommand``) into
``git-shell -c "$SSH_ORIGINAL_COMMAND"``, so a key gets ``git-upload-pack``,
``git-receive-pack`` and ``git-upload-archive`` and nothing else, with no user or system
git configuration (``SetEnv``). git over SSH names the repository by its path on the
server, so a repository's URL is ``ssh://<user>@127.0.0.1:<port><root>/<name>.git``.

Running as root, ``sshd`` insists on its privilege separation directory (``/run/sshd`` on
Debian, made by the distribution's service when it starts); ``start()`` makes it, empty
and root-owned, when it is missing.

Tests pin the server with ``known_hosts`` (``[127.0.0.1]:<port> ssh-ed25519 AAAA...``) and
log in with ``client_key`` (the private key's bytes, OpenSSH format). ``generate_key``
makes other key pairs: a client key the server does not know, or a host key that is not
the server's. The repositories are made and read as ``bare_repos.BareRepositories`` does
for both test servers: ``create_repo`` makes one with one commit on disk; ``commit``
changes files as an outside writer does: a clone over SSH, a commit, a push; ``head``,
``files``, ``log`` and ``message`` read a branch straight from the bare repository.

The private key never appears in a process's arguments: git and ssh get the path of a file
only this user can read.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.harness import leaks
from tests.harness.bare_repos import BareRepositories, local_env, run
from tests.harness.procs import (
    LOOPBACK,
    HarnessError,
    ManagedProcess,
    free_port,
    wait_while_alive,
)

SSHD: Final = Path("/usr/sbin/sshd")
SSH_KEYGEN: Final = "ssh-keygen"
# Debian's compiled-in privilege separation directory, which sshd needs when run as root.
PRIVSEP_DIR: Final = Path("/run/sshd")
START_TIMEOUT: Final = 30.0
KEYGEN_TIMEOUT: Final = 30.0
BANNER: Final = b"SSH-2.0-"
FORCED_COMMAND: Final = 'git-shell -c "$SSH_ORIGINAL_COMMAND"'

_CONFIG: Final = """\
# Written by the test harness for one sshd it runs in the foreground.
ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
StrictModes no
PermitUserEnvironment no
DisableForwarding yes
PermitTTY no
PrintMotd no
UseDNS no
LoginGraceTime 30
LogLevel VERBOSE
SetEnv GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
ForceCommand {forced}
"""


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An ed25519 key pair: the private key as OpenSSH writes it, the public key's line."""

    private: bytes
    public: str  # "ssh-ed25519 AAAA... comment"

    def __repr__(self) -> str:  # failure reports and --showlocals must not print it
        return f"KeyPair({self.public.split()[-1]!r})"

    @property
    def public_blob(self) -> str:
        """``ssh-ed25519 AAAA...``: the key without its comment, as known_hosts holds it."""
        kind, blob = self.public.split()[:2]
        return f"{kind} {blob}"


def generate_key(directory: Path, comment: str) -> KeyPair:
    """A new ed25519 key pair made by ``ssh-keygen`` in ``directory``; the files are left
    there (the private one readable by this user only)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="key-", dir=directory)) / "id_ed25519"
    run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        what="ssh-keygen",
        timeout=KEYGEN_TIMEOUT,
    )
    pair = KeyPair(path.read_bytes(), path.with_suffix(".pub").read_text().strip())
    _remember_private_key(pair.private, comment)
    return pair


class SshGitServer(BareRepositories):
    """git over SSH for the bare repositories under ``root``; see the module doc."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.port = 0
        self._state: Path | None = None  # sshd's files and the client key, private
        self._process: ManagedProcess | None = None
        self._host_key: KeyPair | None = None
        self._client_key: KeyPair | None = None
        self._client_key_file: Path | None = None
        self._known_hosts_file: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SshGitServer:
        """Generate the keys, write the configuration and run ``sshd`` on a free 127.0.0.1
        port; return once it greets on that port. Idempotent."""
        if self._process is not None:
            return self
        if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
            raise HarnessError(
                f"{SSHD} is missing: the git-over-SSH tests need the Debian package "
                "openssh-server (the harness runs its own sshd; the system service is not used)"
            )
        for tool in (SSH_KEYGEN, "ssh", "git-shell"):
            if shutil.which(tool) is None:
                raise HarnessError(f"{tool} is missing: the git-over-SSH tests need it")
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            PRIVSEP_DIR.chmod(0o755)
        self.root.mkdir(parents=True, exist_ok=True)
        state = Path(tempfile.mkdtemp(prefix="sshd-", dir=self.root))  # mode 0700
        self._state = state
        try:
            self._host_key = generate_key(state / "host", f"imagedrift-test-host@{LOOPBACK}")
            host_key_file = state / "ssh_host_ed25519_key"
            host_key_file.write_bytes(self._host_key.private)
            host_key_file.chmod(0o600)
            self._client_key = generate_key(state / "client", "imagedrift-test-client")
            self._client_key_file = state / "client_key"
            self._client_key_file.write_bytes(self._client_key.private)
            self._client_key_file.chmod(0o600)
            authorized = state / "authorized_keys"
            authorized.write_text(self._client_key.public + "\n")
            authorized.chmod(0o600)
            self.port = free_port()
            self._known_hosts_file = state / "known_hosts"
            self._known_hosts_file.write_bytes(self.known_hosts)
            config = state / "sshd_config"
            config.write_text(
                _CONFIG.format(
                    address=LOOPBACK,
                    port=self.port,
                    host_key=host_key_file,
                    pid_file=state / "sshd.pid",
                    authorized_keys=authorized,
                    user=self.user,
                    forced=FORCED_COMMAND,
                )
            )
            run([str(SSHD), "-t", "-f", str(config)], what="sshd -t (the configuration)")
            process = ManagedProcess("sshd", [str(SSHD), "-D", "-e", "-f", str(config)], state)
            self._process = process
            wait_while_alive(
                [process],
                self._greets,
                what=f"sshd on {LOOPBACK}:{self.port}",
                timeout=START_TIMEOUT,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop ``sshd`` and remove its files and keys (the repositories stay under
        ``root``); idempotent."""
        process, self._process = self._process, None
        if process is not None:
            process.stop()
        state, self._state = self._state, None
        if state is not None:
            shutil.rmtree(state, ignore_errors=True)

    def __enter__(self) -> SshGitServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        """sshd's own log (``-e``: everything it would send to syslog)."""
        return self._require_process().log_path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- addresses and keys ---------------------------------------------------------------

    @property
    def address(self) -> str:
        """``[127.0.0.1]:<port>``, the server's name in known_hosts."""
        if not self.port or self._state is None:
            raise HarnessError("the SSH git server is not started")
        return f"[{LOOPBACK}]:{self.port}"

    def url(self, name: str) -> str:
        """``ssh://<user>@127.0.0.1:<port><absolute path of the bare repository>``."""
        self.address  # noqa: B018  # raises when not started
        return f"ssh://{self.user}@{LOOPBACK}:{self.port}{self._bare(name).resolve()}"

    @property
    def host_key(self) -> KeyPair:
        if self._host_key is None:
            raise HarnessError("the SSH git server is not started")
        return self._host_key

    @property
    def known_hosts(self) -> bytes:
        """The one known_hosts line that pins this server's host key."""
        return self.known_hosts_line(self.host_key)

    def known_hosts_line(self, host_key: KeyPair) -> bytes:
        """A known_hosts line claiming ``host_key`` is this server's (a wrong one, unless
        it is ``host_key``)."""
        return f"{self.address} {host_key.public_blob}\n".encode()

    @property
    def client_key(self) -> bytes:
        """The private key ``authorized_keys`` lets in (OpenSSH format)."""
        if self._client_key is None:
            raise HarnessError("the SSH git server is not started")
        return self._client_key.private

    def generate_key(self, comment: str) -> KeyPair:
        """A new key pair, kept with the server's files (gone with ``stop()``)."""
        return generate_key(self._require_state() / "extra", comment)

    # -- git as a client ------------------------------------------------------------------

    def git_env(self) -> dict[str, str]:
        """Environment for a git client of this server: no user or system configuration,
        no prompt, and ssh with the client key and only this server's host key pinned
        (paths of files, never a key on the command line)."""
        state = self._require_state()
        if self._client_key_file is None or self._known_hosts_file is None:
            raise HarnessError("the SSH git server is not started")
        env = {k: v for k, v in local_env().items() if not k.startswith("SSH_")}
        env["GIT_SSH_COMMAND"] = (
            f"ssh -F {os.devnull} -i {self._client_key_file} -o IdentitiesOnly=yes "
            f"-o UserKnownHostsFile={self._known_hosts_file} "
            f"-o GlobalKnownHostsFile={os.devnull} -o StrictHostKeyChecking=yes "
            f"-o BatchMode=yes -o ControlPath=none -o ConnectTimeout=10 "
            f"-E {state / 'ssh-client.log'}"
        )
        return env

    def git(self, *args: str, cwd: Path | None = None) -> str:
        """Run a git command as a client of this server (see ``git_env``); its stdout."""
        return run(["git", *args], what=f"git {' '.join(args)}", cwd=cwd, env=self.git_env())

    # -- internals ------------------------------------------------------------------------

    def _client_git(self, *args: str, cwd: Path | None = None) -> str:
        return self.git(*args, cwd=cwd)

    def _work_dir(self) -> Path:
        return self._require_state()

    def _require_state(self) -> Path:
        if self._state is None:
            raise HarnessError("the SSH git server is not started")
        return self._state

    def _require_process(self) -> ManagedProcess:
        if self._process is None:
            raise HarnessError("the SSH git server is not started")
        return self._process

    def _greets(self) -> bool:
        """sshd answers on its port with an SSH identification line."""
        with socket.create_connection((LOOPBACK, self.port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            return sock.recv(64).startswith(BANNER)


def _remember_private_key(private: bytes, comment: str) -> None:
    """The leak check looks for the whole key and for each of its lines that carries key
    bytes (the first line of the body is the same for every unencrypted ed25519 key)."""
    text = private.decode()
    leaks.remember(text, f"SSH private key {comment}")
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    leaks.remember("".join(body), f"SSH private key {comment} (unwrapped)")
    for line in body[1:]:
        leaks.remember(line, f"SSH private key {comment} (a line)")


__all__ = ["KeyPair", "SshGitServer", "generate_key"]

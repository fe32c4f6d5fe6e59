"""Signed write-back commits and pull-request branches: with a ``signingKey`` in the
repository's credentials every commit imagedrift makes carries an SSH signature that
``git verify-commit`` accepts for that key (and no other); the key is never left on disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

from imagedrift.git.repository import GitCredentials, Repository
from tests.harness import leaks
from tests.harness.git_server import GitServer
from tests.integration.git_cases import MANIFEST, NEW, replace_image

SIGNER = "imagedrift@acme.example"


def keypair(where: Path, name: str) -> tuple[bytes, str]:
    key = where / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    private = key.read_bytes()
    leaks.remember(private.decode(), f"signing key {name}")
    public = (where / f"{name}.pub").read_text().strip()
    key.unlink()
    return private, public


def verify(server: GitServer, name: str, sha: str, signers: str, where: Path) -> bool:
    """``git verify-commit`` in a fresh clone, trusting ``signers`` (allowed-signers lines)."""
    clone = where / f"verify-{sha[:8]}"
    if not clone.exists():
        server.git("clone", "--quiet", "--no-single-branch", server.url(name), str(clone))
    server.git("fetch", "--quiet", "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=clone)
    allowed = where / "allowed_signers"
    allowed.write_text(signers)
    done = server.git(
        "-c",
        f"gpg.ssh.allowedSignersFile={allowed}",
        "verify-commit",
        sha,
        cwd=clone,
        check=False,
    )
    return done.returncode == 0


def test_commits_are_signed_with_the_configured_key(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    git_server.create_repo(git_repo, {"apps/web.yaml": MANIFEST})
    private, public = keypair(tmp_path, "signer")
    _, other = keypair(tmp_path, "other")
    user, password = git_server.credentials
    creds = GitCredentials(user, password, signing_key=private)
    repo = Repository(git_server.url(git_repo), "main", tmp_path / "clone", creds)

    pushed = repo.commit(replace_image, "imagedrift: signed", "apps")
    assert pushed is not None
    assert NEW in git_server.files(git_repo)["apps/web.yaml"]
    assert verify(git_server, git_repo, pushed.sha, f"{SIGNER} {public}\n", tmp_path)
    assert not verify(git_server, git_repo, pushed.sha, f"{SIGNER} {other}\n", tmp_path)

    proposed = repo.propose(
        lambda files: {p: t.replace("1.0.1", "1.0.2") for p, t in files.items()},
        "imagedrift: proposed",
        "imagedrift/p/signed",
        "apps",
    )
    assert proposed is not None and proposed.pushed
    assert verify(git_server, git_repo, proposed.sha, f"{SIGNER} {public}\n", tmp_path)

    # The key lived only in a private scratch directory for the calls' duration.
    left = [p for p in (tmp_path / "clone").rglob("*") if p.is_file()]
    assert not any(private in p.read_bytes() for p in left)
    assert "BEGIN OPENSSH PRIVATE KEY" not in repr(creds)

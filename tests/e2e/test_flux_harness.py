"""The GitOps harness itself: the loopback git server alone, then Flux's own controllers
applying a repository from it to the control plane.

Flux: a Deployment manifest in a repository, a Secret with the server's credentials, a
GitRepository (10 s interval) and a Kustomization (prune, targetNamespace). The Deployment
appears labelled by the Kustomization, a pushed image change is applied (the
``reconcile.fluxcd.io/requestedAt`` annotation makes Flux fetch at once instead of at the
next interval), and a wrong password turns the GitRepository Ready=False.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import Kube
from tests.harness.flux import Flux
from tests.harness.flux_app import DEPLOYMENT, MANIFESTS, FluxApp, condition, deployment_yaml
from tests.harness.git_server import REALM, GitServer
from tests.harness.procs import LOOPBACK

# Never pulled: kwok's fake nodes run pods without images.
IMAGE = f"{LOOPBACK}:5000/imagedrift-test/web"
APPLY_TIMEOUT = 60.0
CHANGE_TIMEOUT = 30.0


def deployment_manifest(tag: str) -> str:
    return deployment_yaml(DEPLOYMENT, f"{IMAGE}:{tag}", container="web")


# -- the git server alone ---------------------------------------------------------------


def _get_refs(server: GitServer, name: str, authorization: str | None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=10)
    headers = {"Authorization": authorization} if authorization else {}
    connection.request("GET", f"/{name}.git/info/refs?service=git-upload-pack", headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_git_server_refuses_without_credentials(git_server: GitServer, git_repo: str) -> None:
    git_server.create_repo(git_repo, {"README.md": "hello\n"})
    user, password = git_server.credentials

    for authorization in (None, _basic(user, password + "x"), _basic("someone", password)):
        response = _get_refs(git_server, git_repo, authorization)
        assert response.status == 401
        assert response.getheader("WWW-Authenticate") == f'Basic realm="{REALM}"'
    assert _get_refs(git_server, git_repo, _basic(user, password)).status == 200

    refused = git_server.git(
        "ls-remote", git_server.url(git_repo), credentials=(user, "wrong"), check=False
    )
    assert refused.returncode != 0
    assert "Authentication failed" in refused.stderr
    statuses = [r.status for r in git_server.requests_for(git_repo)]
    # git asks again (with nothing, its askpass says nothing) before giving up.
    assert statuses[:4] == [401, 401, 401, 200] and set(statuses[4:]) == {401}, statuses
    # Only the one authenticated advertisement counts as a fetch.
    assert git_server.fetches(git_repo) == 1


def test_git_server_clone_push_and_request_log(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    first = {"README.md": "hello\n", f"{MANIFESTS}/web.yaml": deployment_manifest("1.0")}
    url = git_server.create_repo(git_repo, first)
    assert url == f"http://{LOOPBACK}:{git_server.port}/{git_repo}.git"
    assert git_server.requests_for(git_repo) == []  # made on disk, not over HTTP
    created = git_server.head(git_repo)

    clone = tmp_path / "clone"
    git_server.git("clone", "--quiet", url, str(clone))
    assert (clone / "README.md").read_text() == "hello\n"
    assert git_server.git("rev-parse", "HEAD", cwd=clone).stdout.strip() == created
    # Credentials came from the environment: nothing of them in the clone's configuration.
    _, password = git_server.credentials
    assert password not in (clone / ".git" / "config").read_text()
    assert git_server.fetches(git_repo) == 1

    since = time.monotonic()
    # Larger than git's 1 MiB http.postBuffer, so the push is sent chunked.
    blob = base64.b64encode(os.urandom(3 << 19)).decode()
    pushed = git_server.commit(
        git_repo,
        {"README.md": None, "big.txt": blob, f"{MANIFESTS}/web.yaml": deployment_manifest("2.0")},
        message="Bump web to 2.0",
    )
    assert git_server.head(git_repo) == pushed
    assert git_server.fetches(git_repo, since=since) == 1  # the writer's clone
    assert git_server.pushes(git_repo, since=since) == 1
    receive = git_server.requests_for(git_repo, service="git-receive-pack", since=since)
    assert {(r.method, r.status, r.user) for r in receive} == {
        ("GET", 200, git_server.user),
        ("POST", 200, git_server.user),
    }
    assert any(r.chunked and r.body_bytes > 1 << 20 for r in receive), receive
    files = git_server.files(git_repo)
    assert sorted(files) == ["big.txt", f"{MANIFESTS}/web.yaml"]
    assert files["big.txt"] == blob
    assert (
        yaml.safe_load(files[f"{MANIFESTS}/web.yaml"])["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
        == f"{IMAGE}:2.0"
    )
    log = git_server.log(git_repo)
    assert [c.sha for c in log] == [pushed, created]
    assert log[0].subject == "Bump web to 2.0"
    assert log[0].author.startswith("Outside Writer <")

    git_server.git("pull", "--quiet", "--ff-only", cwd=clone)
    assert not (clone / "README.md").exists()
    assert git_server.fetches(git_repo, since=since) == 2
    assert all(password not in r.path for r in git_server.requests)


def test_git_server_takes_gzip_and_chunked_bodies(git_server: GitServer, git_repo: str) -> None:
    """git and go-git may send a fetch request gzip-encoded and in chunks: the bridge
    dechunks, the backend inflates."""
    git_server.create_repo(git_repo, {"README.md": "hello\n"})
    want = git_server.head(git_repo)
    request = _pkt(f"want {want} no-progress\n") + b"0000" + _pkt("done\n")
    body = gzip.compress(request)
    chunks = [body[:7], body[7:19], body[19:]]

    connection = http.client.HTTPConnection(LOOPBACK, git_server.port, timeout=10)
    connection.request(
        "POST",
        f"/{git_repo}.git/git-upload-pack",
        body=iter(chunks),
        headers={
            "Authorization": _basic(*git_server.credentials),
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
        encode_chunked=True,
    )
    response = connection.getresponse()
    data = response.read()
    connection.close()
    assert response.status == 200, data[:200]
    (logged,) = git_server.requests_for(git_repo, service="git-upload-pack")
    assert (logged.chunked, logged.content_encoding, logged.body_bytes) == (True, "gzip", len(body))
    assert response.getheader("Content-Type") == "application/x-git-upload-pack-result"
    assert data.startswith(b"0008NAK\n")
    assert b"PACK" in data


def _pkt(line: str) -> bytes:
    return f"{len(line) + 4:04x}{line}".encode()


# -- Flux -------------------------------------------------------------------------------


@pytest.fixture
def flux_app(
    flux: Flux, git_server: GitServer, git_repo: str, kube: Kube, namespace: str
) -> Iterator[FluxApp]:
    git_server.create_repo(git_repo, {f"{MANIFESTS}/web.yaml": deployment_manifest("1.0")})
    yield FluxApp(kube, flux, git_server, git_repo, namespace)
    flux.check_alive()


# The e2e suite's after-test snapshot reads ImagePolicies: their CRD must be there.
@pytest.mark.usefixtures("crds_installed")
def test_flux_applies_pushes_and_reports_a_wrong_password(
    flux_app: FluxApp, flux: Flux, git_server: GitServer, kube: Kube
) -> None:
    app = flux_app
    first = git_server.head(app.name)
    app.apply()

    app.wait_image(f"{IMAGE}:1.0", APPLY_TIMEOUT)
    app.wait_revision(first, APPLY_TIMEOUT)
    deployment = kube.apps.read_namespaced_deployment(DEPLOYMENT, app.namespace)
    labels = (deployment.metadata.labels if deployment.metadata else None) or {}
    assert labels.get("kustomize.toolkit.fluxcd.io/name") == app.name
    assert labels.get("kustomize.toolkit.fluxcd.io/namespace") == app.namespace
    # Flux authenticated from its first request on, with the Secret's credentials.
    served = git_server.requests_for(app.name)
    assert served, "Flux never asked the git server"
    assert all(r.status == 200 and r.user == git_server.user for r in served), served
    assert git_server.fetches(app.name) >= 1

    # An outside writer pushes a new image; asking for a reconcile applies it at once.
    since = time.monotonic()
    second = git_server.commit(
        app.name, {f"{MANIFESTS}/web.yaml": deployment_manifest("2.0")}, message="web 2.0"
    )
    app.request_reconcile()
    app.wait_image(f"{IMAGE}:2.0", CHANGE_TIMEOUT)
    app.wait_revision(second, CHANGE_TIMEOUT)
    flux_fetches = [
        r
        for r in git_server.requests_for(app.name, since=since)
        if r.advertisement and r.service == "git-upload-pack" and "go-git" in r.user_agent
    ]
    assert flux_fetches, git_server.requests_for(app.name, since=since)

    # A wrong password: the next fetch is refused and the source says so.
    since = time.monotonic()
    kube.core.patch_namespaced_secret(
        app.secret, app.namespace, {"stringData": {"password": "not-the-password"}}
    )
    app.request_reconcile()

    def refused() -> dict[str, Any] | None:
        ready = condition(app.git_repository(), "Ready")
        return ready if ready.get("status") == "False" else None

    ready = flux.wait(refused, what="GitRepository Ready=False", timeout=CHANGE_TIMEOUT)
    assert ready.get("reason") == "GitOperationFailed", ready
    assert "authentication required" in ready.get("message", ""), ready
    assert git_server.requests_for(app.name, status=401, since=since)
    # What was applied stays applied.
    assert app.deployed_image() == f"{IMAGE}:2.0"

    # The right password again: the source recovers.
    kube.core.patch_namespaced_secret(
        app.secret, app.namespace, {"stringData": {"password": git_server.password}}
    )
    app.request_reconcile()
    flux.wait(
        lambda: condition(app.git_repository(), "Ready").get("status") == "True",
        what="GitRepository Ready=True again",
        timeout=CHANGE_TIMEOUT,
    )

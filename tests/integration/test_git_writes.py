"""GitOps write-back's write (``engine.git_writes``) against a real git server: one commit
per repository and branch for a wave's workloads, what cannot be written is that
workload's reason, a repository that fails does not stop the others, nothing is committed
twice, each repository is fetched once per write, and the clones kept are bounded (in
number and bytes)."""

from __future__ import annotations

from pathlib import Path

from imagedrift.core.gitops_source import GitSource
from imagedrift.core.setters import ImageChange
from imagedrift.engine.git_writes import GitWrite, GitWriter, Written
from imagedrift.git.repository import GitCredentials
from tests.harness.git_server import GitServer

OLD = "reg.example/shop/{app}:1.0.0"
NEW = "reg.example/shop/{app}:1.0.1@sha256:" + "b" * 64


def manifest(name: str, marker: str = "") -> str:
    return f"""# {name}: owned by the shop team
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: app
          image: {OLD.format(app=name)}{marker}
"""


KUSTOMIZATION = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deployment.yaml]
images:
  - name: reg.example/shop/cart
    newTag: 1.0.0  # pinned by CI
"""


def write(url: str, name: str, path: str = "apps") -> GitWrite:
    change = ImageChange(
        "shop", "Deployment", "shop", name, "app", OLD.format(app=name), NEW.format(app=name)
    )
    return GitWrite(f"deployment/shop/{name}", GitSource(url, "main", path, "test"), (change,))


def writer(server: GitServer, root: Path, max_repositories: int = 50) -> GitWriter:
    user, password = server.credentials
    creds = GitCredentials(user, password)
    return GitWriter(root, lambda url: creds, max_repositories=max_repositories)


def test_a_wave_is_one_commit_and_a_refusal_is_one_workload_s_reason(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    flux = '  # {"$imagepolicy": "flux-system:api"}'
    url = git_server.create_repo(
        git_repo,
        {
            "apps/web.yaml": manifest("web"),
            "apps/api.yaml": manifest("api", flux),
            "cart/kustomization.yaml": KUSTOMIZATION,
            "cart/deployment.yaml": manifest("cart").replace(":1.0.0", ""),
        },
    )
    before = len(git_server.log(git_repo))
    writes = [write(url, "web"), write(url, "api"), write(url, "cart", "cart")]
    done = writer(git_server, tmp_path).write(writes, "imagedrift: roll shop to 1.0.1")
    web, api, cart = (done[f"deployment/shop/{n}"] for n in ("web", "api", "cart"))
    assert (web.outcome, cart.outcome, api.outcome) == (
        Written.COMMITTED,
        Written.COMMITTED,
        Written.REFUSED,
    )
    assert "$imagepolicy" in api.reason
    assert web.sha == cart.sha == git_server.head(git_repo)
    assert len(git_server.log(git_repo)) == before + 1, "one commit for the wave"
    files = git_server.files(git_repo)
    assert files["apps/web.yaml"] == manifest("web").replace(
        OLD.format(app="web"), NEW.format(app="web")
    )
    assert files["apps/api.yaml"] == manifest("api", flux), "Flux's value is never edited"
    assert "digest: sha256:" + "b" * 64 in files["cart/kustomization.yaml"]
    assert "newTag: 1.0.1  # pinned by CI" in files["cart/kustomization.yaml"]
    assert web.files == ("apps/web.yaml",) and cart.files == ("cart/kustomization.yaml",)


def test_nothing_is_committed_twice_and_each_repository_is_fetched_once(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    url = git_server.create_repo(git_repo, {"apps/web.yaml": manifest("web")})
    w = writer(git_server, tmp_path)
    first = w.write([write(url, "web")], "m")
    assert first["deployment/shop/web"].outcome is Written.COMMITTED
    pushes, fetches = git_server.pushes(git_repo), git_server.fetches(git_repo)
    again = w.write([write(url, "web")], "m")
    assert again["deployment/shop/web"].outcome is Written.UP_TO_DATE
    assert git_server.pushes(git_repo) == pushes, "no push on an empty diff"
    assert git_server.fetches(git_repo) == fetches + 1, "one fetch per repository per write"


def test_a_repository_that_fails_does_not_stop_the_others(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    url = git_server.create_repo(git_repo, {"apps/web.yaml": manifest("web")})
    missing = git_server.url(f"{git_repo}-missing")
    done = writer(git_server, tmp_path).write([write(missing, "api"), write(url, "web")], "m")
    assert done["deployment/shop/api"].outcome is Written.FAILED
    assert done["deployment/shop/api"].reason
    assert done["deployment/shop/web"].outcome is Written.COMMITTED


def test_clones_kept_are_bounded(git_server: GitServer, git_repo: str, tmp_path: Path) -> None:
    urls = [
        git_server.create_repo(f"{git_repo}-{i}", {"apps/web.yaml": manifest("web")})
        for i in range(3)
    ]
    w = writer(git_server, tmp_path, max_repositories=2)
    for url in urls:
        assert w.write([write(url, "web")], "m")["deployment/shop/web"].sha
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_clones_kept_fit_their_byte_budget(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    """A budget smaller than two clones keeps only the one in use (never that one)."""
    urls = [
        git_server.create_repo(f"{git_repo}-{i}", {"apps/web.yaml": manifest("web")})
        for i in range(3)
    ]
    user, password = git_server.credentials
    creds = GitCredentials(user, password)
    w = GitWriter(tmp_path, lambda url: creds, max_bytes=1)
    for url in urls:
        assert w.write([write(url, "web")], "m")["deployment/shop/web"].sha
        assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1


def test_writes_soon_after_our_own_push_start_from_it_and_a_moved_branch_is_fetched(
    git_server: GitServer, git_repo: str, tmp_path: Path
) -> None:
    """Policies sharing a repository write one after the other within an interval: the
    first fetches, the next start from the commit they pushed (no fetch); when someone else
    pushed meanwhile, the push is refused, the branch fetched, and the write lands on top."""
    files = {f"apps/{n}.yaml": manifest(n) for n in ("web", "api", "cart")}
    url = git_server.create_repo(git_repo, files)
    w = writer(git_server, tmp_path)
    fetches = git_server.fetches(git_repo)
    assert w.write([write(url, "web")], "policy a")["deployment/shop/web"].sha
    assert w.write([write(url, "api")], "policy b")["deployment/shop/api"].sha
    assert git_server.fetches(git_repo) == fetches + 1, "fetched again right after our push"
    git_server.commit_local(git_repo, {"NOTES.md": "someone else\n"})
    cart = w.write([write(url, "cart")], "policy c")["deployment/shop/cart"]
    assert cart.outcome is Written.COMMITTED and cart.retries == 1, cart
    assert git_server.fetches(git_repo) == fetches + 2
    after = git_server.files(git_repo)
    assert after["NOTES.md"] == "someone else\n"
    for name in ("web", "api", "cart"):
        assert after[f"apps/{name}.yaml"] == manifest(name).replace(
            OLD.format(app=name), NEW.format(app=name)
        )
    assert [c.subject for c in git_server.log(git_repo)][:4] == [
        "policy c",
        "Change files",
        "policy b",
        "policy a",
    ]

"""What the git adapter's tests over HTTP and over SSH share: the manifest they edit, the
edit (``replace_image``), and the case that runs the same on both transports, a concurrent
writer whose commit is kept while the adapter's push is retried.

The checks are plain ``assert`` statements with messages (pytest rewrites only test
modules, so a failure here says what it is through its message).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from imagedrift.errors import GitConflict
from imagedrift.git.repository import Repository
from tests.harness.bare_repos import BareRepositories

OLD, NEW = "reg.example/app:1.0.0", "reg.example/app:1.0.1@sha256:" + "a" * 64
MANIFEST = f"""# the web app
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
        - name: app
          image: {OLD}   # set by CI
"""


def replace_image(files: Mapping[str, str]) -> dict[str, str]:
    """The edit: the old image becomes the new one; gone already -> someone else's change."""
    text = files["apps/web.yaml"]
    if NEW in text:
        return {}
    if OLD not in text:
        raise GitConflict("apps/web.yaml no longer says " + OLD)
    return {"apps/web.yaml": text.replace(OLD, NEW)}


def check_a_concurrent_writer_is_kept(
    server: BareRepositories, name: str, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make ``name`` on ``server`` with two files; while ``repo`` (a client of ``name``)
    commits the edit, an outside writer pushes a change to the other file between its
    commit and its push. The push is refused once and retried on top of the outsider's
    commit, which is kept; the branch ends at ``repo``'s commit, by ``repo``'s author."""
    server.create_repo(name, {"apps/web.yaml": MANIFEST, "apps/other.yaml": "a: 1\n"})
    real_git = repo._git
    raced = threading.Event()

    def git(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
        if args[0] == "push" and not raced.is_set():
            raced.set()  # another writer pushes between our commit and our push
            server.commit(name, {"apps/other.yaml": "a: 2\n"}, message="outside")
        return real_git(env, *args, stdin=stdin)

    monkeypatch.setattr(repo, "_git", git)
    pushed = repo.commit(replace_image, "imagedrift: roll web", "apps")
    assert raced.is_set(), "the outside writer never pushed"
    assert pushed is not None and pushed.retries == 1, f"one refused push expected: {pushed}"
    assert server.head(name) == pushed.sha, "the branch ends at the adapter's commit"
    files = server.files(name)
    assert files["apps/other.yaml"] == "a: 2\n", "the other writer's commit is kept"
    assert NEW in files["apps/web.yaml"], f"not edited: {files['apps/web.yaml']!r}"
    log = server.log(name)
    subjects = [c.subject for c in log][:2]
    assert subjects == ["imagedrift: roll web", "outside"], f"newest first: {subjects}"
    author = f"{repo.author.name} <{repo.author.email}>"
    assert log[0].author == author, f"{log[0].author!r} is not {author!r}"

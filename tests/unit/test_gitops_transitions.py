"""Table tests of the GitOps write-back's pure core: the record of a rollout by commit
(imagedrift.core.workloads), the decision to commit (decide), the transitions that start and
conclude it, the step once committed (plan.committed), its lineage rows (history) and the
commit messages (commit_message)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from imagedrift.core import commit_message, transitions
from imagedrift.core.decide import (
    Action,
    CandidateView,
    ContainerDecision,
    ContainerObservation,
    Decision,
    PolicyView,
    State,
    WorkloadObservation,
    decide,
)
from imagedrift.core.gitops_source import GitSource
from imagedrift.core.history import LineageEntry, RolloutRow, sync_rollout
from imagedrift.core.memory import Memory
from imagedrift.core.plan import GitChange, Step, WorkloadFacts, committed, plan
from imagedrift.core.rollout import Phase, Progress
from imagedrift.core.spec import PolicySpec, parse_policy
from imagedrift.core.transitions import Subject
from imagedrift.core.workloads import (
    STATE_ANNOTATION,
    GitRecord,
    RolloutRecord,
    WorkloadRef,
    WorkloadState,
    same_reference,
    unapplied,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BASE_V1, BASE = "sha256:" + "b1" * 32, "sha256:" + "b2" * 32
A1, A2, A3 = ("sha256:" + h * 32 for h in ("a1", "a2", "a3"))
OLD = "reg.example/app:1.0.0"  # as the pod template writes it
CANDIDATE_REF = f"reg.example/app@{A2}"  # as observation pins a candidate
TAGGED = f"reg.example/app:1.0.1@{A2}"  # what a commit writes: the tag kept for humans
RESTORED = f"reg.example/app:1.0.0@{A1}"  # what a rollback commit writes
THIRD = "reg.example/app:9.9.9"  # someone else's image
FLUX = "Flux (label kustomize.toolkit.fluxcd.io/name=apps)"
SOURCE = GitSource(
    "https://git.example/shop/apps.git", "main", "apps/web", "Flux Kustomization flux-system/apps"
)
GIT = GitRecord(SOURCE.url, SOURCE.branch, SOURCE.path, SOURCE.via, commit="c0ffee1")
KEY = "deployment/shop/web"
CANDIDATE = CandidateView(CANDIDATE_REF, A2, "1.0.1", True, False, ("lineage: on the new base",))
COMMIT_VIEW = PolicyView(BASE, commit_gitops=True)
RECORD = RolloutRecord(
    id=f"{BASE}|{A2}",
    base_digest=BASE,
    target={"app": TAGGED},
    previous={"app": OLD},
    tags={"app": "1.0.1"},
    started_at="2026-12-07T11:58:00Z",
    phase=Phase.PROGRESSING.value,
    policy="p",
    previous_digests={"app": A1},
    git=GIT,
)


def record(**changes: object) -> RolloutRecord:
    return dataclasses.replace(RECORD, **changes)  # type: ignore[arg-type]


def policy(mode: str = "Commit", **gitops: object) -> PolicySpec:
    return parse_policy(
        "p",
        {"base": {"image": "reg.example/base", "tag": "1"}, "gitops": {"mode": mode, **gitops}},
    )


def on_old() -> ContainerObservation:
    """A container on the old base with a validated candidate."""
    return ContainerObservation("app", OLD, A1, False, "built on an old base", BASE_V1, CANDIDATE)


def observed(*containers: ContainerObservation, **kw: object) -> WorkloadObservation:
    kw.setdefault("images", {c.name: c.image for c in containers})
    return WorkloadObservation(KEY, containers, **kw)  # type: ignore[arg-type]


# --- the record of a rollout by commit ------------------------------------------------------

GIT_RECORDS = [
    # label, record, its encoding
    (
        "the source only (the files already said so)",
        GitRecord("https://g/r.git", "", "", "Argo CD Application argocd/web"),
        {
            "url": "https://g/r.git",
            "branch": "",
            "path": "",
            "via": "Argo CD Application argocd/web",
        },
    ),
    (
        "committed",
        GitRecord("https://g/r.git", "main", "apps", "Flux Kustomization f/apps", commit="c1"),
        {
            "url": "https://g/r.git",
            "branch": "main",
            "path": "apps",
            "via": "Flux Kustomization f/apps",
            "commit": "c1",
        },
    ),
    (
        "every field",
        GitRecord("ssh://git@g/r.git", "main", "apps", "via", "c1", "c2", "imagedrift/p/x", "u"),
        {
            "url": "ssh://git@g/r.git",
            "branch": "main",
            "path": "apps",
            "via": "via",
            "commit": "c1",
            "rollbackCommit": "c2",
            "head": "imagedrift/p/x",
            "pullRequest": "u",
        },
    ),
]


@pytest.mark.parametrize(("label", "git", "encoded"), GIT_RECORDS, ids=[c[0] for c in GIT_RECORDS])
def test_git_record_round_trip(label: str, git: GitRecord, encoded: dict[str, str]) -> None:
    assert git.encode() == encoded
    assert GitRecord.decode(git.encode()) == git


@pytest.mark.parametrize("raw", [None, {}], ids=["absent", "empty"])
def test_no_git_record_decodes_as_none(raw: dict[str, str] | None) -> None:
    assert GitRecord.decode(raw) is None


@pytest.mark.parametrize(
    "git",
    [None, GIT, dataclasses.replace(GIT, rollback_commit="d00d", head="h", pull_request="u")],
    ids=["patched in place", "committed", "proposed and rolled back"],
)
def test_a_rollout_record_with_git_survives_the_annotation(git: GitRecord | None) -> None:
    state = WorkloadState({"app": "1.0.1"}, record(git=git), (A3,), ())
    body = json.loads(state.encode())
    assert ("git" in body["rollout"]) == (git is not None)
    obj = {"metadata": {"annotations": {STATE_ANNOTATION: state.encode()}}}
    assert WorkloadState.decode(obj) == state


SAME = [
    ("as written", TAGGED, TAGGED, True),
    ("Docker Hub spelled short", "nginx:1", "docker.io/library/nginx:1", True),
    ("Docker Hub without library", "docker.io/nginx:1", "nginx:1", True),
    ("another tag", "reg.example/app:1", "reg.example/app:2", False),
    ("tag and digest against digest only", TAGGED, CANDIDATE_REF, False),
    ("another repository", "reg.example/app:1", "reg.example/other:1", False),
    ("not references, equal", "NOT A REF", "NOT A REF", True),
    ("not references, different", "NOT A REF", "not a ref", False),
]


@pytest.mark.parametrize(("label", "a", "b", "same"), SAME, ids=[c[0] for c in SAME])
def test_same_reference(label: str, a: str, b: str, same: bool) -> None:
    assert same_reference(a, b) is same
    assert same_reference(b, a) is same


TWO = record(
    target={"app": TAGGED, "side": f"reg.example/side:2@{A3}"},
    previous={"app": OLD, "side": "reg.example/side:1"},
)
ROLLING_BACK = record(phase=Phase.ROLLED_BACK.value, rollback=Phase.PROGRESSING.value)
UNAPPLIED = [
    # label, record, pod template images, containers not applied yet
    ("rolling out, still on the previous image", RECORD, {"app": OLD}, ("app",)),
    ("rolling out, applied", RECORD, {"app": TAGGED}, ()),
    ("rolling out, someone else's image", RECORD, {"app": THIRD}, ()),
    ("rolling out, the previous image spelled otherwise", RECORD, {"app": f"{OLD} "}, ("app",)),
    (
        "two containers, one applied",
        TWO,
        {"app": TAGGED, "side": "reg.example/side:1", "other": "x"},
        ("side",),
    ),
    ("rolling out, container gone from the template", RECORD, {}, ()),
    ("rolling back, still on the target", ROLLING_BACK, {"app": TAGGED}, ("app",)),
    ("rolling back, restored", ROLLING_BACK, {"app": RESTORED}, ()),
    ("patched in place: nothing to wait for", record(git=None), {"app": OLD}, ()),
    ("complete: nothing to wait for", record(phase=Phase.COMPLETE.value), {"app": OLD}, ()),
    (
        "rollback settled: nothing to wait for",
        record(phase=Phase.ROLLED_BACK.value, rollback=Phase.COMPLETE.value),
        {"app": TAGGED},
        (),
    ),
]


@pytest.mark.parametrize(
    ("label", "rec", "images", "expected"), UNAPPLIED, ids=[c[0] for c in UNAPPLIED]
)
def test_unapplied(
    label: str, rec: RolloutRecord, images: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert unapplied(rec, images) == expected


# --- the decision to commit -----------------------------------------------------------------

ROLLING = WorkloadState({"app": "1.0.1"}, RECORD)
IN_PLACE = WorkloadState({"app": "1.0.1"}, record(git=None))
DONE = WorkloadState({"app": "1.0.1"}, record(phase=Phase.COMPLETE.value))
PROGRESS = Progress(Phase.PROGRESSING, "1 of 3 replicas updated")

DECISIONS = [
    # label, observation, view, state, action, reason starts with / contains, by commit
    (
        "GitOps-managed, source known: commit",
        observed(on_old(), gitops=FLUX, source=SOURCE),
        COMMIT_VIEW,
        State.DRIFTED,
        Action.ROLL,
        f"committing app={CANDIDATE_REF}",
        True,
    ),
    (
        "GitOps-managed, the source could not be read: say why",
        observed(
            on_old(), gitops=FLUX, source_error="Flux Kustomization flux-system/apps not found"
        ),
        COMMIT_VIEW,
        State.MANAGED_BY_GITOPS,
        Action.NONE,
        f"managed by {FLUX}; would commit {CANDIDATE_REF}, but Flux Kustomization "
        "flux-system/apps not found",
        False,
    ),
    (
        "GitOps-managed, no source and no error",
        observed(on_old(), gitops=FLUX),
        COMMIT_VIEW,
        State.MANAGED_BY_GITOPS,
        Action.NONE,
        "its git source is not known",
        False,
    ),
    (
        "mode Leave: reported, pointing at spec.gitops.mode",
        observed(on_old(), gitops=FLUX, source=SOURCE),
        PolicyView(BASE),
        State.MANAGED_BY_GITOPS,
        Action.NONE,
        "spec.gitops.mode",
        False,
    ),
    (
        "mode Patch: patched like any workload",
        observed(on_old(), gitops=FLUX, source=SOURCE),
        PolicyView(BASE, patch_gitops=True),
        State.DRIFTED,
        Action.ROLL,
        "rolling app=",
        False,
    ),
    (
        "mode Commit, not GitOps-managed: patched like any workload",
        observed(on_old()),
        COMMIT_VIEW,
        State.DRIFTED,
        Action.ROLL,
        "rolling app=",
        False,
    ),
    (
        "committed, not applied yet (still the previous image): waiting, not Overridden",
        observed(
            record=ROLLING, images={"app": OLD}, gitops=FLUX, source=SOURCE, progress=PROGRESS
        ),
        COMMIT_VIEW,
        State.ROLLING_OUT,
        Action.NONE,
        "1 of 3 replicas updated",
        False,
    ),
    (
        "committed and applied: followed",
        observed(record=ROLLING, images={"app": TAGGED}, gitops=FLUX, progress=PROGRESS),
        COMMIT_VIEW,
        State.ROLLING_OUT,
        Action.NONE,
        "1 of 3 replicas updated",
        False,
    ),
    (
        "committed, then a third image: Overridden",
        observed(record=ROLLING, images={"app": THIRD}, gitops=FLUX, progress=PROGRESS),
        COMMIT_VIEW,
        State.OVERRIDDEN,
        Action.YIELD,
        f"app was changed to {THIRD}",
        False,
    ),
    (
        "complete, then a human reverted it in git: Overridden",
        observed(record=DONE, images={"app": OLD}, gitops=FLUX, source=SOURCE),
        COMMIT_VIEW,
        State.OVERRIDDEN,
        Action.YIELD,
        f"app was changed to {OLD}",
        False,
    ),
    (
        "patched in place, back on the previous image: Overridden (nothing to wait for)",
        observed(record=IN_PLACE, images={"app": OLD}, progress=PROGRESS),
        PolicyView(BASE),
        State.OVERRIDDEN,
        Action.YIELD,
        f"app was changed to {OLD}",
        False,
    ),
]


@pytest.mark.parametrize(
    ("label", "observation", "view", "state", "action", "reason", "by_commit"),
    DECISIONS,
    ids=[c[0] for c in DECISIONS],
)
def test_decide(
    label: str,
    observation: WorkloadObservation,
    view: PolicyView,
    state: State,
    action: Action,
    reason: str,
    by_commit: bool,
) -> None:
    decision = decide(observation, view)
    assert (decision.state, decision.action, decision.by_commit) == (state, action, by_commit)
    assert reason in decision.reason, decision.reason
    if by_commit:
        assert decision.reason.startswith("committing ")
        assert dict(decision.targets) == {"app": CANDIDATE_REF}
    if state is State.MANAGED_BY_GITOPS:
        assert not decision.targets
        assert [(c.name, c.state) for c in decision.containers] == [
            ("app", State.MANAGED_BY_GITOPS)
        ]


# The setters keep a repository as the manifest spells it (``nginx``, not
# ``docker.io/library/nginx``), so the GitOps controller applies ``nginx:1.0.1@<digest>``
# while the record's target is the parsed ``docker.io/library/nginx:1.0.1@<digest>``.
HUB_TARGET = f"docker.io/library/nginx:1.0.1@{A2}"
HUB_APPLIED = f"nginx:1.0.1@{A2}"
HUB_RECORD = record(target={"app": HUB_TARGET}, previous={"app": "nginx:1.0.0"})


def test_a_commit_applied_as_the_manifest_spells_it_is_not_overridden() -> None:
    observation = observed(
        record=WorkloadState({"app": "1.0.1"}, HUB_RECORD),
        images={"app": HUB_APPLIED},
        gitops=FLUX,
        source=SOURCE,
        progress=PROGRESS,
    )
    decision = decide(observation, COMMIT_VIEW)
    assert (decision.state, decision.action) == (State.ROLLING_OUT, Action.NONE), decision.reason


def test_a_failed_commit_applied_as_the_manifest_spells_it_is_rolled_back() -> None:
    observation = observed(
        record=WorkloadState({"app": "1.0.1"}, HUB_RECORD),
        images={"app": HUB_APPLIED},
        gitops=FLUX,
        progress=Progress(Phase.FAILED, "ProgressDeadlineExceeded"),
    )
    failed = Decision(
        State.ROLLED_BACK,
        "ProgressDeadlineExceeded",
        Action.ROLL_BACK,
        (ContainerDecision("app", State.ROLLED_BACK, "ProgressDeadlineExceeded"),),
    )
    t = transitions.conclude(Subject(KEY, observation.record, observation, failed), BASE, NOW)
    assert dict(t.images) == {"app": f"docker.io/library/nginx:1.0.0@{A1}"}


# --- starting and concluding a rollout by commit --------------------------------------------


def roll(observation: WorkloadObservation, view: PolicyView = COMMIT_VIEW) -> Subject:
    decision = decide(observation, view)
    assert decision.action is Action.ROLL
    return Subject(KEY, observation.record, observation, decision, {"app": OLD})


HEAD = f"imagedrift/p/{'b2' * 6}-{'a2' * 6}"
STARTS = [
    # label, subject, head prefix, images, git record (None: patched in place)
    (
        "by commit: tag@digest, the source recorded",
        lambda: roll(observed(on_old(), gitops=FLUX, source=SOURCE)),
        "",
        {"app": TAGGED},
        GitRecord(SOURCE.url, SOURCE.branch, SOURCE.path, SOURCE.via),
    ),
    (
        "by pull request: the head branch named after policy, base and candidate",
        lambda: roll(observed(on_old(), gitops=FLUX, source=SOURCE)),
        "imagedrift/",
        {"app": TAGGED},
        GitRecord(SOURCE.url, SOURCE.branch, SOURCE.path, SOURCE.via, head=HEAD),
    ),
    (
        "patched in place (mode Patch): the pinned reference, no git",
        lambda: roll(
            observed(on_old(), gitops=FLUX, source=SOURCE), PolicyView(BASE, patch_gitops=True)
        ),
        "",
        {"app": CANDIDATE_REF},
        None,
    ),
    (
        "not GitOps-managed: a head prefix changes nothing",
        lambda: roll(observed(on_old())),
        "imagedrift/",
        {"app": CANDIDATE_REF},
        None,
    ),
]


@pytest.mark.parametrize(
    ("label", "make", "prefix", "images", "git"), STARTS, ids=[c[0] for c in STARTS]
)
def test_start(
    label: str,
    make: Callable[[], Subject],
    prefix: str,
    images: dict[str, str],
    git: GitRecord | None,
) -> None:
    t = transitions.start(make(), "p", BASE, NOW, prefix)
    rec = t.state.rollout
    assert rec is not None
    assert dict(t.images) == images and dict(rec.target) == images
    assert rec.git == git
    assert rec.phase == Phase.PROGRESSING.value and rec.id == f"{BASE}|{A2}"
    assert dict(rec.previous) == {"app": OLD} and dict(rec.previous_digests) == {"app": A1}
    by_commit = git is not None
    assert (t.by_commit, t.decision.by_commit) == (by_commit, by_commit)
    assert t.decision.reason == ("committed" if by_commit else "patched")
    (row,) = t.decision.containers
    assert row.state is State.ROLLING_OUT
    (started,) = t.landed
    assert started.reason == "RolloutStarted"
    if by_commit:
        assert row.reason == f"committed to {TAGGED} in {SOURCE.url} ({SOURCE.via})"
        assert started.message.endswith(f"(committed to {SOURCE.url})")


def failed_subject(images: dict[str, str], rec: RolloutRecord = RECORD) -> Subject:
    observation = WorkloadObservation(
        KEY,
        (),
        WorkloadState({"app": "1.0.1"}, rec),
        progress=Progress(Phase.FAILED, "ProgressDeadlineExceeded"),
        images=images,
        gitops=FLUX,
    )
    rows = tuple(ContainerDecision(c, State.ROLLED_BACK, "failed") for c in sorted(rec.target))
    decision = Decision(State.ROLLED_BACK, "failed", Action.ROLL_BACK, rows)
    return Subject(KEY, observation.record, observation, decision)


SIDE_RESTORED = f"reg.example/side:1@{A1}"
TWO_FAILED = record(
    target={"app": TAGGED, "side": f"reg.example/side:2@{A3}"},
    previous={"app": OLD, "side": "reg.example/side:1"},
    previous_digests={"app": A1, "side": A1},
)
CONCLUSIONS = [
    # label, subject, images the rollback commits, left alone
    (
        "never applied (still the previous image): restored in git all the same",
        failed_subject({"app": OLD}),
        {"app": RESTORED},
        (),
    ),
    ("applied, then failed", failed_subject({"app": TAGGED}), {"app": RESTORED}, ()),
    (
        "one container applied, one not: every target container restored",
        failed_subject({"app": TAGGED, "side": "reg.example/side:1"}, TWO_FAILED),
        {"app": RESTORED, "side": SIDE_RESTORED},
        (),
    ),
    ("someone else's image: left alone", failed_subject({"app": THIRD}), {}, ("app",)),
    (
        "patched in place, back on the previous image: someone else's, left alone",
        failed_subject({"app": OLD}, record(git=None)),
        {},
        ("app",),
    ),
]


@pytest.mark.parametrize(
    ("label", "subject", "images", "superseded"), CONCLUSIONS, ids=[c[0] for c in CONCLUSIONS]
)
def test_conclude_a_failed_rollout_by_commit(
    label: str, subject: Subject, images: dict[str, str], superseded: tuple[str, ...]
) -> None:
    t = transitions.conclude(subject, BASE, NOW)
    rec = t.state.rollout
    assert rec is not None and rec.phase == Phase.ROLLED_BACK.value
    assert dict(t.images) == images
    assert t.by_commit is bool(images)
    assert subject.state.rollout is not None
    assert rec.git == subject.state.rollout.git  # the rollback commit is recorded once made
    assert rec.rollback == (Phase.PROGRESSING.value if images else "")
    (notice,) = t.landed
    assert notice.reason == "RolledBack"
    assert (f"by a commit to {SOURCE.url}" in notice.message) is bool(images), notice.message
    assert t.state.overridden == tuple(rec.digests()[c] for c in superseded)


def test_a_failed_rollout_by_commit_restores_the_previous_tags() -> None:
    t = transitions.conclude(failed_subject({"app": OLD}), BASE, NOW)
    assert dict(t.state.tags) == {"app": "1.0.0"}
    assert t.state.rejected == (A2,)
    assert [r.digest for r in t.rejections] == [A2]


def test_a_complete_rollout_by_commit_commits_nothing() -> None:
    subject = failed_subject({"app": TAGGED})
    done = dataclasses.replace(
        subject,
        observation=dataclasses.replace(
            subject.observation, progress=Progress(Phase.COMPLETE, "3 of 3 available")
        ),
        decision=dataclasses.replace(subject.decision, action=Action.FINISH),
    )
    t = transitions.conclude(done, BASE, NOW)
    assert (dict(t.images), t.by_commit) == ({}, False)
    assert t.state.rollout is not None and t.state.rollout.phase == Phase.COMPLETE.value


# A ROLL by commit as decided (what ``settle`` goes back to when its write fails).
TARGETED = Decision(
    State.DRIFTED,
    f"committing app={TAGGED}",
    Action.ROLL,
    (
        ContainerDecision("app", State.DRIFTED, "built on an old base; rolling to 1.0.1"),
        ContainerDecision("side", State.UP_TO_DATE, "on the current base"),
    ),
    {"app": TAGGED},
    {"app": "1.0.1"},
    True,
)


def test_refused_leaves_the_workload_to_git_and_says_why() -> None:
    why = "apps/web/deployment.yaml:9: Flux's marker says Flux's image automation owns it"
    after = transitions.refused(TARGETED, why)
    assert (after.state, after.action) == (State.MANAGED_BY_GITOPS, Action.NONE)
    assert after.reason == f"cannot commit to git: {why}"
    assert [(c.name, c.state, c.reason) for c in after.containers] == [
        ("app", State.MANAGED_BY_GITOPS, f"cannot commit to git: {why}"),
        ("side", State.UP_TO_DATE, "on the current base"),
    ]
    assert not after.targets


@pytest.mark.parametrize(
    ("conflict", "state", "action", "app"),
    [
        (False, State.ERROR, Action.NONE, State.ERROR),
        (True, State.DRIFTED, Action.ROLL, State.DRIFTED),  # decided again next event
    ],
    ids=["a fault: targeted rows say Error", "a 409: decided again"],
)
def test_patch_failed_marks_only_the_targeted_rows(
    conflict: bool, state: State, action: Action, app: State
) -> None:
    error = "pushing to https://git.example/shop/apps.git: authentication failed"
    after = transitions.patch_failed(TARGETED, error, conflict)
    assert (after.state, after.action) == (state, action)
    rows = {c.name: (c.state, c.reason) for c in after.containers}
    assert rows["side"] == (State.UP_TO_DATE, "on the current base")
    assert rows["app"][0] is app
    if conflict:
        assert after == TARGETED
    else:
        assert after.reason == error and rows["app"][1] == error


# --- the step, once committed ---------------------------------------------------------------


def gitops_facts(name: str = "web") -> WorkloadFacts:
    """A Flux-managed workload on the old base, its source known (``decide``: ROLL by commit)."""
    ref = WorkloadRef("Deployment", "shop", name)
    observation = WorkloadObservation(
        str(ref), (on_old(),), images={"app": OLD}, gitops=FLUX, source=SOURCE
    )
    return WorkloadFacts(ref, "7", WorkloadState(), observation, {"app": OLD})


def failed_facts() -> WorkloadFacts:
    """A rollout by commit the GitOps controller applied, which then failed."""
    ref = WorkloadRef("Deployment", "shop", "web")
    state = WorkloadState({"app": "1.0.1"}, RECORD)
    observation = WorkloadObservation(
        str(ref),
        (),
        state,
        progress=Progress(Phase.FAILED, "ProgressDeadlineExceeded"),
        images={"app": TAGGED},
        gitops=FLUX,
        source=SOURCE,
    )
    return WorkloadFacts(ref, "9", state, observation, {"app": TAGGED})


def only_step(spec: PolicySpec, facts: WorkloadFacts) -> Step:
    (step,) = plan(spec, BASE, Memory(), [facts], [], NOW).steps
    return step


def without_state(patch: dict[str, object]) -> dict[str, object]:
    out = json.loads(json.dumps(patch))
    del out["metadata"]["annotations"][STATE_ANNOTATION]
    return dict(out)


def test_a_planned_commit_patches_the_record_only() -> None:
    step = only_step(policy(), gitops_facts())
    assert step.decision.by_commit
    assert step.git == GitChange(SOURCE, {"app": (OLD, TAGGED)})
    assert step.patch is not None
    assert "spec" not in step.patch  # the image goes to git, not into the template
    assert "resourceVersion" not in step.patch["metadata"]  # never orphan a pushed commit


def test_a_planned_pull_request_names_its_head() -> None:
    step = only_step(policy("PullRequest", pullRequest={"branchPrefix": "bots/"}), gitops_facts())
    assert step.git is not None and step.git.head == f"bots/p/{'b2' * 6}-{'a2' * 6}"


COMMITTED = [
    # label, spec, facts, committed(...) arguments, the record's git after
    (
        "a commit to the branch",
        policy(),
        gitops_facts,
        ("1a2b3c4", "", ""),
        GitRecord(SOURCE.url, SOURCE.branch, SOURCE.path, SOURCE.via, commit="1a2b3c4"),
    ),
    (
        "the files already said so: no commit",
        policy(),
        gitops_facts,
        ("", "", ""),
        GitRecord(SOURCE.url, SOURCE.branch, SOURCE.path, SOURCE.via),
    ),
    (
        "a pull request: its URL, the head kept",
        policy("PullRequest"),
        gitops_facts,
        ("1a2b3c4", "https://git.example/shop/apps/pull/7", ""),
        GitRecord(
            SOURCE.url,
            SOURCE.branch,
            SOURCE.path,
            SOURCE.via,
            commit="1a2b3c4",
            head=f"imagedrift/p/{'b2' * 6}-{'a2' * 6}",
            pull_request="https://git.example/shop/apps/pull/7",
        ),
    ),
    (
        "a pull request on an existing branch: its head",
        policy("PullRequest"),
        gitops_facts,
        ("1a2b3c4", "https://git.example/shop/apps/pull/7", "imagedrift/p/older"),
        GitRecord(
            SOURCE.url,
            SOURCE.branch,
            SOURCE.path,
            SOURCE.via,
            commit="1a2b3c4",
            head="imagedrift/p/older",
            pull_request="https://git.example/shop/apps/pull/7",
        ),
    ),
    (
        "a rollback: the rollback commit, the rollout's commit kept",
        policy(),
        failed_facts,
        ("5d6e7f8", "ignored", "ignored"),
        dataclasses.replace(GIT, rollback_commit="5d6e7f8"),
    ),
]


@pytest.mark.parametrize(
    ("label", "spec", "facts", "args", "git"), COMMITTED, ids=[c[0] for c in COMMITTED]
)
def test_committed(
    label: str,
    spec: PolicySpec,
    facts: Callable[[], WorkloadFacts],
    args: tuple[str, str, str],
    git: GitRecord,
) -> None:
    step = only_step(spec, facts())
    assert step.git is not None and step.patch is not None
    state_before, patch_before = step.state, json.dumps(step.patch)
    after = committed(step, *args)
    assert after.state.rollout is not None and after.state.rollout.git == git
    # Only the record's git changed: in the state, and in the patch that writes it.
    assert after.state == dataclasses.replace(
        step.state,
        rollout=dataclasses.replace(step.state.rollout, git=git),  # type: ignore[type-var]
    )
    assert after.patch is not None
    recorded = {"metadata": {"annotations": after.patch["metadata"]["annotations"]}}
    assert WorkloadState.decode(recorded) == after.state
    assert without_state(after.patch) == without_state(step.patch)
    assert (after.decision, after.git, after.landed) == (step.decision, step.git, step.landed)
    # The step it came from is left as it was.
    assert (step.state, json.dumps(step.patch)) == (state_before, patch_before)


def test_a_rollback_step_restores_the_previous_digest_in_git() -> None:
    step = only_step(policy(), failed_facts())
    assert step.decision.action is Action.ROLL_BACK
    assert step.git == GitChange(SOURCE, {"app": (TAGGED, RESTORED)}, rollback=True)


# --- the lineage ----------------------------------------------------------------------------

ROW = RolloutRow(KEY, "app", OLD, "Progressing", "patched", "2026-12-07T11:58:00Z")


@pytest.mark.parametrize(
    ("row", "extra"),
    [
        (ROW, {}),
        (dataclasses.replace(ROW, commit="c1"), {"commit": "c1"}),
        (
            dataclasses.replace(
                ROW,
                result="RolledBack",
                rollback="Complete",
                commit="c1",
                rollback_commit="c2",
                pull_request="https://git.example/shop/apps/pull/7",
            ),
            {
                "result": "RolledBack",
                "rollback": "Complete",
                "commit": "c1",
                "rollbackCommit": "c2",
                "pullRequest": "https://git.example/shop/apps/pull/7",
            },
        ),
    ],
    ids=["patched in place", "committed", "proposed, committed and rolled back"],
)
def test_rollout_row_round_trip(row: RolloutRow, extra: dict[str, str]) -> None:
    status = row.to_status()
    assert status == {
        "workload": KEY,
        "container": "app",
        "previousImage": OLD,
        "result": "Progressing",
        "reason": "patched",
        "startedAt": "2026-12-07T11:58:00Z",
        **extra,
    }
    assert RolloutRow.from_status(status) == row


ENTRY = LineageEntry(BASE, "reg.example/app", A2, "1.0.1", "Passed", (), "2026-12-07T11:00:00Z")
SYNCS = [
    # label, rows the lineage has, record, (commit, rollbackCommit, pullRequest) of the row after
    ("a new row names the commit", (), RECORD, ("c0ffee1", "", "")),
    ("a row gets the commit made after it", (ROW,), RECORD, ("c0ffee1", "", "")),
    (
        "a row gets the pull request",
        (dataclasses.replace(ROW, commit="c0ffee1"),),
        record(git=dataclasses.replace(GIT, pull_request="https://g/pull/7")),
        ("c0ffee1", "", "https://g/pull/7"),
    ),
    (
        "a row gets the rollback commit",
        (dataclasses.replace(ROW, result="RolledBack", rollback="Progressing", commit="c0ffee1"),),
        record(
            phase=Phase.ROLLED_BACK.value,
            rollback=Phase.PROGRESSING.value,
            git=dataclasses.replace(GIT, rollback_commit="d00d"),
        ),
        ("c0ffee1", "d00d", ""),
    ),
    ("patched in place: no commit", (), record(git=None), ("", "", "")),
]


@pytest.mark.parametrize(("label", "rows", "rec", "commits"), SYNCS, ids=[c[0] for c in SYNCS])
def test_sync_rollout_writes_the_commits(
    label: str, rows: tuple[RolloutRow, ...], rec: RolloutRecord, commits: tuple[str, str, str]
) -> None:
    lineage = (dataclasses.replace(ENTRY, rollouts=rows),)
    (entry,) = sync_rollout(lineage, KEY, rec, BASE)
    (row,) = entry.rollouts
    assert (row.commit, row.rollback_commit, row.pull_request) == commits
    assert (row.result, row.rollback) == (rec.phase, rec.rollback)
    assert row.key == (KEY, "app", rec.started_at)


def test_sync_rollout_leaves_a_row_that_says_it_all() -> None:
    row = dataclasses.replace(ROW, reason="as it was", commit="c0ffee1")
    lineage = (dataclasses.replace(ENTRY, rollouts=(row,)),)
    assert sync_rollout(lineage, KEY, RECORD, BASE) == lineage


# --- the commit messages --------------------------------------------------------------------

LINEAGE = (
    LineageEntry(
        BASE,
        "reg.example/app",
        A2,
        "1.0.1",
        "Passed",
        ("lineage: built on the current base", "signature: verified"),
        "2026-12-07T11:00:00Z",
    ),
    # Another candidate on this base, and this candidate on an older base: not ours.
    LineageEntry(BASE, "reg.example/app", A3, "1.0.2", "Rejected", ("scan: CVE",), "t"),
    LineageEntry(BASE_V1, "reg.example/app", A2, "1.0.1", "Pending", ("smoke",), "t"),
)


def forward_steps(spec: PolicySpec) -> tuple[Step, ...]:
    """Two workloads committed, one patched in place (no git change: not in the message)."""
    plain = gitops_facts("plain")
    plain = dataclasses.replace(
        plain, observation=dataclasses.replace(plain.observation, gitops="", source=None)
    )
    steps = plan(spec, BASE, Memory(), [gitops_facts("web"), gitops_facts("api"), plain], [], NOW)
    assert [s.git is not None for s in steps.steps] == [True, True, False]
    return steps.steps


def test_compose_the_default_message() -> None:
    message = commit_message.compose(policy(), BASE, forward_steps(policy()), LINEAGE)
    assert message == (
        f"imagedrift: p: rebuilt on base sha256:{'b2' * 6}\n"
        "\n"
        f"Base reg.example/base:1 is now {BASE}.\n"
        "\n"
        f"- deployment/shop/web app: {OLD} -> {TAGGED}\n"
        f"- deployment/shop/api app: {OLD} -> {TAGGED}\n"
        "\n"
        "Gate verdicts:\n"
        f"reg.example/app:1.0.1 (sha256:{'a2' * 6}): Passed\n"
        "  - lineage: built on the current base\n"
        "  - signature: verified\n"
        "\n"
        "Imagedrift-Policy: p\n"
    )


COMPOSED = [
    # label, template, lineage, message before the trailer
    (
        "every field",
        "{policy} {workloads} {baseShort}|{base}|{baseDigest}",
        LINEAGE,
        f"p 2 sha256:{'b2' * 6}|reg.example/base:1|{BASE}",
    ),
    (
        "the changes",
        "{changes}",
        LINEAGE,
        f"- deployment/shop/web app: {OLD} -> {TAGGED}\n"
        f"- deployment/shop/api app: {OLD} -> {TAGGED}",
    ),
    ("no verdicts known: the field is empty", "[{verdicts}]", (), "[]"),
    (
        "verdicts of this base and candidate only",
        "{verdicts}",
        LINEAGE[1:] + LINEAGE[:1],
        "Gate verdicts:\n"
        f"reg.example/app:1.0.1 (sha256:{'a2' * 6}): Passed\n"
        "  - lineage: built on the current base\n"
        "  - signature: verified",
    ),
    ("trailing blank lines trimmed", "{policy}\n\n{verdicts}\n\n", (), "p"),
]


@pytest.mark.parametrize(
    ("label", "template", "lineage", "expected"), COMPOSED, ids=[c[0] for c in COMPOSED]
)
def test_compose(
    label: str, template: str, lineage: tuple[LineageEntry, ...], expected: str
) -> None:
    spec = policy(commitMessage=template)
    message = commit_message.compose(spec, BASE, forward_steps(spec), lineage)
    assert message == f"{expected}\n\nImagedrift-Policy: p\n"


def test_rollback_message() -> None:
    step = only_step(policy(), failed_facts())
    message = commit_message.rollback(policy(), [step])
    assert message == (
        "imagedrift: p: roll back 1 workload(s)\n"
        "\n"
        "The rollout failed; the exact previous images are restored:\n"
        f"- deployment/shop/web app: {TAGGED} -> {RESTORED}\n"
        "\n"
        "Why:\n"
        "- deployment/shop/web: ProgressDeadlineExceeded\n"
        "\n"
        "Imagedrift-Policy: p\n"
    )

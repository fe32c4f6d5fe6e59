"""What a rollout's new pods did since the patch: crashed, could not start, or stayed up.

A Deployment's conditions judge a rollout by readiness alone. A container with no
readiness probe that crashes a second after it starts is Ready after every restart, so the
Deployment says ``NewReplicaSetAvailable`` and never ``ProgressDeadlineExceeded`` while the
service is down. The kubelet's container statuses say what happened: restarts, terminations
and the reason a container is waiting. Only the pods that run the rollout's target images
count (old pods being replaced say nothing of the candidate), and only what ended after the
patch (a rolled-back-to image may have crashed long before).

Pure: pod bodies in, a verdict out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imagedrift.core.conditions import parse_timestamp
from imagedrift.core.refs import ImageRef
from imagedrift.core.running import same_image
from imagedrift.errors import InvalidReference

__all__ = ["PodHealth", "job_pod_trouble", "pod_health"]

# Waiting reasons that no retry of the kubelet will cure: the pod spec or the image is
# wrong for this node. Pull failures are not among them: a registry hiccup heals, and the
# rollout's deadline judges one that does not.
CANNOT_START = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "InvalidImageName",
        "RunContainerError",
        "PreCreateHookError",
        "PostStartHookError",
        "StartError",
    }
)
PULLING = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"})
MAX_MESSAGE = 160  # of a kubelet message quoted in a reason


@dataclass(frozen=True)
class PodHealth:
    """The rollout's pods as the kubelet reports them.

    ``failed``: why the rollout failed (a crash or a container that cannot start), or "".
    ``waiting``: why it is not done yet as far as the pods tell (an image still pulling), or "".
    ``ready_since``: since when every target pod has been Ready (the latest of their Ready
    transitions); None when one is not Ready, or no pod runs the target yet.
    ``pods``: how many pods run the target images.
    """

    failed: str = ""
    waiting: str = ""
    ready_since: datetime | None = None
    pods: int = 0


def _short(text: Any) -> str:
    """One line, at most ``MAX_MESSAGE`` characters. A runtime's message is a chain of
    wrappers ("failed to create shim task: OCI runtime create failed: ...") whose cause
    comes last: a long one keeps its end."""
    one_line = " ".join(str(text or "").split())
    return one_line if len(one_line) <= MAX_MESSAGE else "…" + one_line[-(MAX_MESSAGE - 1) :]


def _runs_target(pod: Mapping[str, Any], targets: Mapping[str, ImageRef]) -> bool:
    spec = pod.get("spec") or {}
    images = {
        str(c.get("name")): str(c.get("image") or "")
        for c in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ()))
    }
    return all(same_image(images.get(name), ref) for name, ref in targets.items())


def _terminated(state: Any) -> Mapping[str, Any]:
    found = (state or {}).get("terminated") if isinstance(state, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def _ended_since(
    terminated: Mapping[str, Any], since: datetime, pod_created: datetime | None
) -> bool:
    finished = parse_timestamp(terminated.get("finishedAt"))
    if finished is not None:
        # The kubelet writes whole seconds: a crash in the patch's own second counts.
        return finished >= since.replace(microsecond=0)
    return pod_created is not None and pod_created >= since.replace(microsecond=0)


def _exit(terminated: Mapping[str, Any]) -> str:
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or ""
    text = f"exit code {code}" if code is not None else "terminated"
    if reason:
        text += f" ({reason})"
    if terminated.get("message"):
        text += f": {_short(terminated['message'])}"
    return text


def _container_trouble(
    pod_name: str,
    status: Mapping[str, Any],
    since: datetime,
    pod_created: datetime | None,
) -> tuple[str, str]:
    """(why the rollout failed, why it is still waiting) for one container; "" for none."""
    name = status.get("name", "")
    where = f"pod {pod_name} container {name}"
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason in CANNOT_START:
        detail = f": {_short(waiting['message'])}" if waiting.get("message") else ""
        return f"{where} cannot start: {reason}{detail}", ""
    restarts = int(status.get("restartCount") or 0)
    last = _terminated(status.get("lastState"))
    now_ended = _terminated(status.get("state"))
    if restarts and last and _ended_since(last, since, pod_created):
        times = "once" if restarts == 1 else f"{restarts} times"
        return f"{where} crashed: restarted {times}, last {_exit(last)}", ""
    if (
        restarts
        and not last
        and pod_created is not None
        and pod_created >= since.replace(microsecond=0)
    ):
        return f"{where} crashed: restarted {restarts} time(s)", ""
    if now_ended and _ended_since(now_ended, since, pod_created):
        # A long-running container that stopped, even with code 0, took the service down.
        return f"{where} stopped: {_exit(now_ended)}", ""
    if reason in PULLING:
        detail = f": {_short(waiting['message'])}" if waiting.get("message") else ""
        return "", f"{where}: {reason}{detail}"
    return "", ""


def _ready_at(pod: Mapping[str, Any]) -> datetime | None:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            if condition.get("status") != "True":
                return None
            return parse_timestamp(condition.get("lastTransitionTime"))
    return None


def pod_health(
    pods: Iterable[Mapping[str, Any]], targets: Mapping[str, str], since: datetime
) -> PodHealth:
    """How the pods running ``targets`` (container -> image) fared since ``since``, the
    patch that started the rollout (or the rollback). The first failure found is the
    verdict: one crash of the candidate is enough to reject it."""
    refs: dict[str, ImageRef] = {}
    for container, image in targets.items():
        try:
            refs[container] = ImageRef.parse(image)
        except InvalidReference:
            return PodHealth()  # nothing to recognise the new pods by
    failed = waiting = ""
    count = 0
    ready_since: datetime | None = None
    all_ready = True
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or not _runs_target(pod, refs):
            continue
        count += 1
        created = parse_timestamp(meta.get("creationTimestamp"))
        status = pod.get("status") or {}
        for container in (
            *(status.get("initContainerStatuses") or ()),
            *(status.get("containerStatuses") or ()),
        ):
            if container.get("name") not in refs:
                continue
            bad, slow = _container_trouble(str(meta.get("name", "")), container, since, created)
            failed = failed or bad
            waiting = waiting or slow
        ready = _ready_at(pod)
        if ready is None:
            all_ready = False
        elif ready_since is None or ready > ready_since:
            ready_since = ready
    return PodHealth(failed, waiting, ready_since if all_ready and count else None, count)


def job_pod_trouble(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """(why a smoke-test Job's pod failed, what it is waiting on) in the pod's own words:
    a Job says only "BackoffLimitExceeded" or "DeadlineExceeded", the kubelet says that the
    image would run as root or that its entrypoint does not exist. A container that cannot
    start at all is a failure now: waiting out the Job's deadline would not change it."""
    failed = waiting = ""
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name", ""))
        status = pod.get("status") or {}
        for container in (
            *(status.get("initContainerStatuses") or ()),
            *(status.get("containerStatuses") or ()),
        ):
            where = f"pod {name} container {container.get('name', '')}"
            state = container.get("state") or {}
            ended = _terminated(state) or _terminated(container.get("lastState"))
            reason = str((state.get("waiting") or {}).get("reason") or "")
            message = (state.get("waiting") or {}).get("message")
            detail = f": {_short(message)}" if message else ""
            if reason in CANNOT_START:
                failed = failed or f"{where} cannot start: {reason}{detail}"
            elif ended and ended.get("exitCode") not in (0, None):
                failed = failed or f"{where} {_exit(ended)}"
            elif reason and reason not in ("ContainerCreating", "PodInitializing"):
                waiting = waiting or f"{where}: {reason}{detail}"
    return failed, waiting

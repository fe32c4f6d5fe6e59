"""What a tag-referenced container really runs: the digest its node pulled.

A pod template saying ``nginx:1.25`` names a tag, and the tag may have been re-pushed since
the pods pulled it. The kubelet reports what it pulled in
``status.containerStatuses[].imageID`` (containerd: ``docker.io/library/nginx@sha256:…``,
Docker: ``docker-pullable://nginx@sha256:…``). imagedrift takes the digest most of the
workload's running pods report for the container, among pods made from the template's
reference (their spec's image, compared after normalising both sides, so ``nginx:1.25``
and ``docker.io/library/nginx:1.25`` are the same; the status may name a mirror the node
pulled through); when no pod reports one, the digest recorded on the workload; only when
neither is known, the tag's digest now.

Pure: pod bodies in, a digest out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from imagedrift.core.refs import ImageRef, is_digest
from imagedrift.errors import InvalidReference

__all__ = ["digest_of_image_id", "pod_selector", "pulled_digest", "same_image"]


def same_image(a: str | None, b: ImageRef) -> bool:
    """Does reference text ``a`` name the same image as ``b`` once both are normalised?"""
    if not a:
        return False
    try:
        return ImageRef.parse(a) == b
    except InvalidReference:
        return False


def digest_of_image_id(image_id: str) -> str:
    """The manifest digest in a kubelet ``imageID`` (``repo@sha256:…``), or "" when it
    carries none. A bare ``sha256:…`` (``docker://sha256:…``) is the image's config id, not
    a manifest digest, and names nothing a registry serves."""
    _, at, digest = image_id.rpartition("@")
    return digest if at and is_digest(digest) else ""


def pod_selector(workload: Mapping[str, Any]) -> str:
    """The workload's pod selector as a label-selector string; "" when it has none (a
    CronJob, or a selector imagedrift cannot express), in which case no pods are read."""
    selector = (workload.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or ():
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(expression.get("values") or ())
        if operator == "In":
            parts.append(f"{key} in ({values})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif operator == "Exists":
            parts.append(key)
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            return ""
    return ",".join(parts)


def pulled_digest(pods: Iterable[Mapping[str, Any]], container: str, image: ImageRef) -> str:
    """The digest most pods report for ``container`` running ``image``; "" when none does
    (no pods yet, a node that reports no digest) or the count is tied."""
    seen: Counter[str] = Counter()
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        # The pod's own spec says which reference it was made from. The status may name
        # another: a node that pulled the image through a mirror, or first under another
        # name, reports that name, though the digest (content-addressed) is the same.
        specified = {
            str(c.get("name")): str(c.get("image") or "")
            for c in (pod.get("spec") or {}).get("containers") or ()
        }
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            if status.get("name") != container:
                continue
            made_from = specified.get(container) or str(status.get("image") or "")
            digest = digest_of_image_id(str(status.get("imageID") or ""))
            if digest and same_image(made_from, image):
                seen[digest] += 1
    ranked = seen.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return ""
    return ranked[0][0]


def pod_count(workload: Mapping[str, Any]) -> int:
    """How many pods the workload's status counts (replicas, or a DaemonSet's scheduled)."""
    status = workload.get("status") or {}
    return int(status.get("replicas") or status.get("desiredNumberScheduled") or 0)


def runs_no_pods(workload: Mapping[str, Any]) -> bool:
    """Is the workload scaled to zero, with no pod left? Then nothing runs that a tag was
    pulled for: what the tag means now is what a scale-up would pull, and there is no
    running digest to keep (a scale-up moves the workload, and its pods are read then)."""
    if workload.get("kind") == "CronJob":
        return False
    spec = workload.get("spec") or {}
    return "replicas" in spec and not int(spec.get("replicas") or 0) and not pod_count(workload)

"""Push notifications as plain data: which image references a delivery names.

Pure functions over the request body (no I/O). Four envelopes are understood:

- ACR webhook: one JSON object ``{"id", "timestamp", "action", "target": {"repository",
  "tag", "digest", ...}, "request": {"host", ...}}``; ``push`` and ``delete`` name an image,
  ``ping`` (sent when a webhook is created or tested) names none;
- Event Grid schema: a JSON array of ``{"id", "topic", "subject", "eventType", "data",
  "dataVersion", "metadataVersion"}``, ``data`` shaped like the ACR webhook; the
  ``Microsoft.EventGrid.SubscriptionValidationEvent`` handshake asks for its
  ``validationCode`` back;
- CloudEvents 1.0 (what Event Grid sends in that mode): one object, or an array
  (``application/cloudevents-batch+json``), with ``specversion``, ``type``, ``source``,
  ``data``;
- the OCI distribution notification envelope ``{"events": [{"action", "target":
  {"repository", "tag", "digest", "mediaType"}, "request": {"host"}}]}``.

A deleted image is reported like a pushed one: either way the tag's digest may have
changed, and a check finds out what it is now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from imagedrift.core.refs import ImageRef
from imagedrift.errors import InvalidReference

VALIDATION_EVENT: Final = "Microsoft.EventGrid.SubscriptionValidationEvent"
IMAGE_EVENTS: Final = frozenset(
    {"Microsoft.ContainerRegistry.ImagePushed", "Microsoft.ContainerRegistry.ImageDeleted"}
)
IMAGE_ACTIONS: Final = frozenset({"push", "delete"})
MAX_EVENTS: Final = 1000  # per delivery; Event Grid batches at most 5,000 events but 1 MB


class MalformedDelivery(ValueError):
    """The body is not one of the understood envelopes; the message says why."""


@dataclass(frozen=True)
class Delivery:
    """What one request amounts to.

    ``refs``: image references pushed or deleted (``host/repo:tag`` or ``host/repo@digest``;
    without ``host`` when the envelope has none), in order, without duplicates.
    ``validation_code``: an Event Grid handshake to answer (``{"validationResponse": code}``).
    ``ignored``: events that name no image (ping, chart pushes, pulls, blobs).
    """

    refs: tuple[str, ...] = ()
    validation_code: str | None = None
    ignored: int = 0
    form: str = ""


def parse_delivery(body: bytes) -> Delivery:
    """Read a delivery body; raise MalformedDelivery naming what is wrong."""
    if not body.strip():
        raise MalformedDelivery("empty body")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedDelivery(f"body is not JSON: {exc}") from None
    if isinstance(document, list):
        if not document:
            raise MalformedDelivery("empty event array")
        if len(document) > MAX_EVENTS:
            raise MalformedDelivery(f"more than {MAX_EVENTS} events in one delivery")
        if not all(isinstance(e, dict) for e in document):
            raise MalformedDelivery("event array holds something other than objects")
        if all("specversion" in e for e in document):
            return _collect("cloudevents", [_cloud_event(e) for e in document])
        if all("eventType" in e for e in document):
            return _collect("eventgrid", [_grid_event(e) for e in document])
        raise MalformedDelivery("array of events that are neither Event Grid nor CloudEvents")
    if not isinstance(document, dict):
        raise MalformedDelivery("body is neither a JSON object nor an array")
    if "specversion" in document:
        return _collect("cloudevents", [_cloud_event(document)])
    if "eventType" in document:  # a single Event Grid event outside its array
        return _collect("eventgrid", [_grid_event(document)])
    if isinstance(document.get("events"), list):
        events = document["events"]
        if len(events) > MAX_EVENTS:
            raise MalformedDelivery(f"more than {MAX_EVENTS} events in one delivery")
        return _collect("distribution", [_distribution_event(e) for e in events])
    if "action" in document:
        return _collect("acr", [_acr_event(document)])
    raise MalformedDelivery("not an ACR webhook, Event Grid, CloudEvents or registry notification")


def parse_cloud_event_binary(headers: Mapping[str, str], body: bytes) -> Delivery:
    """CloudEvents in binary mode: attributes in ``ce-*`` headers, the body is ``data``."""
    kind = headers.get("ce-type", "")
    if headers.get("ce-specversion", "") != "1.0":
        raise MalformedDelivery("ce-specversion must be 1.0")
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedDelivery(f"CloudEvent data is not JSON: {exc}") from None
    event = {"specversion": "1.0", "type": kind, "subject": headers.get("ce-subject"), "data": data}
    return _collect("cloudevents", [_cloud_event(event)])


# -- one event each ------------------------------------------------------------------------

_Result = tuple[str | None, str | None]  # (ref, validation code); (None, None) = ignored


def _collect(form: str, results: list[_Result]) -> Delivery:
    refs: list[str] = []
    code: str | None = None
    ignored = 0
    for ref, validation in results:
        if validation is not None:
            code = validation
        elif ref is None:
            ignored += 1
        elif ref not in refs:
            refs.append(ref)
    return Delivery(refs=tuple(refs), validation_code=code, ignored=ignored, form=form)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedDelivery(f"{what} is not an object")
    return value


def _acr_event(event: Mapping[str, Any]) -> _Result:
    action = event.get("action")
    if not isinstance(action, str):
        raise MalformedDelivery("action is not a string")
    if action not in IMAGE_ACTIONS:
        return None, None  # ping, chart_push, quarantine, ...
    return _image_ref(event, f"{action} event"), None


def _distribution_event(event: Any) -> _Result:
    event = _object(event, "event")
    action = event.get("action")
    if action not in IMAGE_ACTIONS:
        return None, None  # pull, mount
    target = _object(event.get("target"), "event target")
    media_type = str(target.get("mediaType") or "")
    if media_type and not any(word in media_type for word in ("manifest", "index", "list")):
        return None, None  # a blob (layer or config) was pushed, not an image
    return _image_ref(event, f"{action} event"), None


def _grid_event(event: Mapping[str, Any]) -> _Result:
    kind = event.get("eventType")
    if kind == VALIDATION_EVENT:
        return None, _validation_code(event.get("data"))
    if kind not in IMAGE_EVENTS:
        return None, None
    return _image_ref(_object(event.get("data"), f"{kind} data"), str(kind)), None


def _cloud_event(event: Mapping[str, Any]) -> _Result:
    if event.get("specversion") != "1.0":
        raise MalformedDelivery(f"unsupported CloudEvents specversion {event.get('specversion')!r}")
    kind = event.get("type")
    if kind == VALIDATION_EVENT:
        return None, _validation_code(event.get("data"))
    if kind not in IMAGE_EVENTS:
        return None, None
    return _image_ref(_object(event.get("data"), f"{kind} data"), str(kind)), None


def _validation_code(data: Any) -> str:
    code = _object(data, "validation data").get("validationCode")
    if not isinstance(code, str) or not code or len(code) > 256:
        raise MalformedDelivery("validation event without a validationCode")
    return code


def _image_ref(event: Mapping[str, Any], what: str) -> str:
    """``host/repo:tag`` (or ``@digest`` when there is no tag) from target and request."""
    target = _object(event.get("target"), f"{what} target")
    repository = target.get("repository")
    if not isinstance(repository, str) or not repository:
        raise MalformedDelivery(f"{what} without target.repository")
    tag = target.get("tag") or ""
    digest = target.get("digest") or ""
    if not isinstance(tag, str) or not isinstance(digest, str):
        raise MalformedDelivery(f"{what}: target.tag and target.digest must be strings")
    if not tag and not digest:
        raise MalformedDelivery(f"{what} for {repository} names neither tag nor digest")
    request = event.get("request")
    host = request.get("host") if isinstance(request, dict) else None
    if host is not None and not isinstance(host, str):
        raise MalformedDelivery(f"{what}: request.host must be a string")
    name = f"{host}/{repository}" if host else repository
    ref = f"{name}:{tag}" if tag else f"{name}@{digest}"
    try:
        ImageRef.parse(ref)
    except InvalidReference as exc:
        raise MalformedDelivery(f"{what}: {exc}") from None
    return ref

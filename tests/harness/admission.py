"""Admission through the API: does the API server admit an ImagePolicy, or refuse it, and
with which message.

A server-side dry run (``dryRun=All``) goes through everything a create goes through
(defaulting, the CRD's schema and CEL rules, admission) and stores nothing, and
``fieldValidation=Strict`` refuses an unknown or duplicate field as ``kubectl apply`` does:
the same verdict as ``kubectl apply [--dry-run=server]``, in one request on the session's
client instead of a kubectl process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.controlplane import Kube

GROUP, VERSION, PLURAL = "imagedrift.io", "v1alpha1", "imagepolicies"


def image_policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def admit_policy(kube: Kube, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The ImagePolicy (cluster-scoped) as the API server would store it, nothing stored;
    ``ApiException`` if the API server refuses it."""
    admitted = kube.custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        image_policy(name, spec),
        dry_run="All",
        field_validation="Strict",
    )
    assert isinstance(admitted, dict), admitted
    return admitted


def policy_refusal(kube: Kube, name: str, spec: dict[str, Any]) -> str:
    """The message with which the API server refuses the ImagePolicy as invalid (422), which
    names each field it refuses; the test fails if the policy is admitted, or refused for
    any other reason."""
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        admit_policy(kube, name, spec)
    status = json.loads(refused.value.body or "{}")
    assert (refused.value.status, status.get("reason")) == (422, "Invalid"), refused.value.body
    message = str(status["message"])
    fields = [c["field"] for c in status.get("details", {}).get("causes", []) if c.get("field")]
    assert fields, f"the refusal names no field: {status}"
    for field in fields:
        assert f"{field}: " in message, (field, message)
    return message

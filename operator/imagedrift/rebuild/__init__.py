"""Rebuild triggers: when the base moved and workloads drifted, ask a build system (an ACR
Task, or any CI behind a signed webhook) to rebuild, at most once per base digest."""

from imagedrift.rebuild.decision import (
    MAX_ATTEMPTS,
    RebuildSpec,
    parse_rebuild,
    retry_delay,
    should_trigger,
)
from imagedrift.rebuild.hook import RebuildHook, after_check, install_hook
from imagedrift.rebuild.triggers import (
    AcrTaskTrigger,
    RebuildRequest,
    Trigger,
    TriggerResult,
    WebhookTrigger,
    sign,
    verify_signature,
)

__all__ = [
    "MAX_ATTEMPTS",
    "AcrTaskTrigger",
    "RebuildHook",
    "RebuildRequest",
    "RebuildSpec",
    "Trigger",
    "TriggerResult",
    "WebhookTrigger",
    "after_check",
    "install_hook",
    "parse_rebuild",
    "retry_delay",
    "should_trigger",
    "sign",
    "verify_signature",
]

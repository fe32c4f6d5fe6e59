"""Rebuild triggers, the adapters that ask a build system (an ACR Task, or any CI behind a
signed webhook) to rebuild. When to ask is decided in ``core.rebuild``; the step that asks,
after a check, is ``engine.rebuild_step``."""

from imagedrift.core.rebuild import (
    MAX_ATTEMPTS,
    RebuildSpec,
    parse_rebuild,
    retry_delay,
    should_trigger,
)
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
    "RebuildRequest",
    "RebuildSpec",
    "Trigger",
    "TriggerResult",
    "WebhookTrigger",
    "parse_rebuild",
    "retry_delay",
    "should_trigger",
    "sign",
    "verify_signature",
]

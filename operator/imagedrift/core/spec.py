"""The ImagePolicy spec as frozen values, and ``parse_policy``: the one place it is read.

Anything the API server's schema let through but we cannot act on raises ``InvalidSpec``
with a message an SRE can act on (the policy goes Stalled). The policy and its base and app
parts are read here; ``spec.rollout`` by ``core.rollout_spec``, ``spec.validation`` by
``core.validation_spec`` and ``spec.rebuild`` by ``core.rebuild``. Their values are
importable from here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from imagedrift.core import patchtags
from imagedrift.core.durations import parse_duration
from imagedrift.core.gitops_spec import GitOpsSpec, parse_gitops
from imagedrift.core.rebuild import RebuildSpec, parse_rebuild
from imagedrift.core.refs import ImageRef
from imagedrift.core.rollout_spec import (
    POLICY_LABEL,
    LabelSelector,
    MaintenanceWindow,
    RolloutSpec,
    Wave,
    parse_rollout,
)
from imagedrift.core.validation_spec import (
    SEVERITIES,
    IgnoredFinding,
    SignatureGate,
    SmokeTestGate,
    ValidationSpec,
    VulnerabilityGate,
    parse_validation,
)
from imagedrift.errors import InvalidReference, InvalidSpec

__all__ = [
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "POLICY_LABEL",
    "SEVERITIES",
    "BaseSpec",
    "GitOpsSpec",
    "IgnoredFinding",
    "LabelSelector",
    "MaintenanceWindow",
    "PolicySpec",
    "RolloutSpec",
    "SignatureGate",
    "SmokeTestGate",
    "ValidationSpec",
    "VulnerabilityGate",
    "Wave",
    "parse_duration",
    "parse_policy",
]

MIN_INTERVAL = 1.0
MAX_INTERVAL = 24 * 3600.0


@dataclass(frozen=True)
class BaseSpec:
    image: ImageRef  # repository only; the tag comes from ``tag`` or ``semver_range``
    tag: str
    semver_range: str
    interval: float
    provider: str = "generic"
    insecure: bool = False  # plain HTTP to ``image.registry``, and to no other host
    secret_name: str = ""
    azure: Mapping[str, str] = field(default_factory=dict)
    patches: str = ""  # "", or core.patchtags' incremental | floating (ACR patch tags)
    # App image registries named in spec.app.insecureRegistries: plain HTTP to those too.
    insecure_registries: tuple[str, ...] = ()

    def plain_http(self, host: str) -> bool:
        """Whether ``host`` is reached over plain HTTP: only when the policy names it,
        as the base's registry (``insecure``) or in ``insecureRegistries``."""
        return (self.insecure and host == self.image.registry) or host in self.insecure_registries

    @property
    def key(self) -> str:
        """What identifies this base lookup across policies (for deduplicated polling)."""
        tracked = self.tag or f"semver:{self.semver_range}"
        if self.patches:
            tracked += f"+{self.patches}"
        # The identity is part of it: what one identity may read says nothing of another's.
        identity = ",".join(f"{k}={v}" for k, v in sorted(self.azure.items()))
        return (
            f"{self.provider}|{self.image.name}|{tracked}|{self.secret_name}"
            f"|{self.plain_http(self.image.registry)}"
            f"|{identity}"
        )


@dataclass(frozen=True)
class PolicySpec:
    name: str
    base: BaseSpec
    tags: Mapping[str, Any]  # {"semver": {...}} | {"regex": {...}} | {"sameTag": {}}
    rollout: RolloutSpec
    max_candidates: int = 10
    # Tags never considered (Flux's exclusionList; default: cosign signature tags).
    exclusions: tuple[str, ...] = (r"^.*\.sig$",)
    app_patches: str = ""  # "", incremental, floating: the app repository's ACR patch tags
    # Argo CD Image Updater's matchers: "regexp:<expression>" or "" (any); globs to ignore.
    allow_tags: str = ""
    ignore_tags: tuple[str, ...] = ()
    accept_patched: bool = False  # a Copa patch newer than the base change is remediation
    history_limit: int = 20
    raw_validation: Mapping[str, Any] = field(default_factory=dict)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    rebuild: RebuildSpec | None = None  # triggers to fire when the base drifts
    gitops: GitOpsSpec = field(default_factory=GitOpsSpec)  # GitOps-managed workloads


def _azure(raw: Mapping[str, Any]) -> dict[str, str]:
    """Flatten ``base.azure``: scalar keys as they are, ``secretRef.name`` as ``secretName``."""
    flat = {k: str(v) for k, v in raw.items() if not isinstance(v, Mapping)}
    if (raw.get("secretRef") or {}).get("name"):
        flat["secretName"] = str(raw["secretRef"]["name"])
    return flat


_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")


def _hosts(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Registry hosts (``host`` or ``host:port``, no scheme or path), as listed."""
    hosts = raw.get("insecureRegistries") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise InvalidSpec(f"{where}: must be a list of registry hosts")
    for i, host in enumerate(hosts):
        if not _HOST.fullmatch(host):
            raise InvalidSpec(f"{where}[{i}]: {host!r} is not a host or host:port")
    return tuple(hosts)


def _patches(raw: Mapping[str, Any], where: str) -> str:
    mode = str(raw.get("patches") or "")
    if mode and mode not in patchtags.MODES:
        raise InvalidSpec(f"{where}: {mode!r} is not one of {', '.join(patchtags.MODES)}")
    return mode


def parse_policy(name: str, spec: Mapping[str, Any]) -> PolicySpec:
    """Read an ImagePolicy spec; raise InvalidSpec naming the field that cannot be used."""
    from imagedrift.core.tagkinds import policy_from_spec  # local: keeps import cycles out

    base_raw = spec.get("base") or {}
    try:
        image = ImageRef.parse(str(base_raw.get("image", "")))
    except InvalidReference as exc:
        raise InvalidSpec(f"spec.base.image: {exc}") from exc
    if image.tag or image.digest:
        raise InvalidSpec("spec.base.image: name the repository only; put the tag in spec.base.tag")
    tag, semver_range = str(base_raw.get("tag") or ""), str(base_raw.get("semverRange") or "")
    if bool(tag) == bool(semver_range):
        raise InvalidSpec("spec.base: set exactly one of tag or semverRange")
    if semver_range:
        try:
            policy_from_spec({"semver": {"range": semver_range}})
        except InvalidReference as exc:
            raise InvalidSpec(f"spec.base.semverRange: {exc}") from exc
    patches = _patches(base_raw, "spec.base.patches")
    if patches and not tag:
        raise InvalidSpec("spec.base.patches: follows the patch tags of spec.base.tag; set tag")
    interval = parse_duration(str(base_raw.get("interval") or "5m"))
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise InvalidSpec(f"spec.base.interval: {interval:g}s is outside 1s..24h")
    base = BaseSpec(
        image=image,
        tag=tag,
        semver_range=semver_range,
        interval=interval,
        provider=str(base_raw.get("provider") or "generic"),
        insecure=bool(base_raw.get("insecure", False)),
        secret_name=str((base_raw.get("secretRef") or {}).get("name", "")),
        azure=_azure(base_raw.get("azure") or {}),
        patches=patches,
    )

    app_raw = spec.get("app") or {}
    base = replace(base, insecure_registries=_hosts(app_raw, "spec.app.insecureRegistries"))
    from imagedrift.core.tagkinds import KINDS

    tags = dict(app_raw.get("tags") or {"sameTag": {}})
    if len(tags) != 1:
        raise InvalidSpec(f"spec.app.tags: choose exactly one of {', '.join(KINDS)}")
    if "sameTag" not in tags:
        try:
            policy_from_spec(tags)
        except InvalidReference as exc:
            raise InvalidSpec(f"spec.app.tags: {exc}") from exc
    kind = next(iter(tags))

    from imagedrift.core import exclusions  # local: it imports tagpolicy

    raw_exclusions = app_raw.get("exclusionList")
    if raw_exclusions is not None and not isinstance(raw_exclusions, list):
        raise InvalidSpec("spec.app.exclusionList: must be a list of regular expressions")
    try:
        excluded = exclusions.check(
            exclusions.DEFAULT if raw_exclusions is None else list(raw_exclusions)
        )
    except (InvalidReference, TypeError) as exc:
        raise InvalidSpec(f"spec.app.exclusionList: {exc}") from exc

    app_patches = _patches(app_raw, "spec.app.patches")
    if app_patches and kind == "newestBuild":
        raise InvalidSpec(
            "spec.app.patches: newestBuild already orders patch tags by their build time; "
            "remove patches"
        )

    from imagedrift.core import tagmatch  # local: it imports tagpolicy's regex translation

    try:
        allow_tags = tagmatch.check_allow(str(app_raw.get("allowTags") or ""))
    except InvalidReference as exc:
        raise InvalidSpec(f"spec.app.allowTags: {exc}") from exc
    raw_ignore = app_raw.get("ignoreTags") or []
    if not isinstance(raw_ignore, list):
        raise InvalidSpec("spec.app.ignoreTags: must be a list of glob patterns")
    try:
        ignore_tags = tagmatch.check_ignore(raw_ignore)
    except InvalidReference as exc:
        raise InvalidSpec(f"spec.app.ignoreTags: {exc}") from exc
    if (allow_tags or ignore_tags) and kind == "sameTag":
        raise InvalidSpec(
            "spec.app.allowTags/ignoreTags: sameTag follows the running tag only; "
            "there are no tags to filter"
        )

    rollout = parse_rollout(spec.get("rollout") or {}, name)
    rebuild = parse_rebuild(spec.get("rebuild"))
    if rebuild is not None and rebuild.acr_task is not None:
        identity = str(base.azure.get("identity") or base.azure.get("type") or "default")
        if identity == "anonymous":
            raise InvalidSpec(
                "spec.rebuild.acrTask: spec.base.azure's anonymous identity cannot schedule "
                "ACR Task runs; use an identity allowed to (registries/scheduleRun/action)"
            )
    return PolicySpec(
        name=name,
        base=base,
        tags=tags,
        rollout=rollout,
        rebuild=rebuild,
        max_candidates=int(app_raw.get("maxCandidates") or 10),
        exclusions=excluded,
        app_patches=app_patches,
        allow_tags=allow_tags,
        ignore_tags=ignore_tags,
        accept_patched=bool(app_raw.get("acceptPatched", False)),
        history_limit=int(spec.get("historyLimit") or 20),
        raw_validation=dict(spec.get("validation") or {}),
        validation=parse_validation(spec.get("validation") or {}),
        gitops=parse_gitops(spec.get("gitops") or {}, rollout.patch_gitops_managed),
    )

"""The ImagePolicy spec as frozen values. ``parse_policy`` is the one place a spec dict is
read; anything the API server's schema let through but we cannot act on raises
``InvalidSpec`` with a message an SRE can act on (the policy goes Stalled)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imagedrift.core import patchtags
from imagedrift.core.rebuild import RebuildSpec, parse_rebuild
from imagedrift.core.refs import ImageRef
from imagedrift.errors import InvalidReference, InvalidSpec

POLICY_LABEL = "imagedrift.io/policy"
MIN_INTERVAL = 1.0
MAX_INTERVAL = 24 * 3600.0
_DURATION_RE = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9]+)s)?(?:([0-9]+)ms)?")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration made of h/m/s/ms parts (``90s``, ``1m30s``, ``2h``)."""
    match = _DURATION_RE.fullmatch(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise InvalidSpec(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    h, m, s, ms = (int(g) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


@dataclass(frozen=True)
class LabelSelector:
    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes label-selector semantics (In, NotIn, Exists, DoesNotExist)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


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
class Wave:
    """One wave: ``count`` workloads, or ``percent`` of the workloads to roll (cumulative)."""

    count: int = 0
    percent: int = 0


@dataclass(frozen=True)
class MaintenanceWindow:
    schedule: str  # cron expression of window starts
    duration: float  # seconds
    time_zone: str = "UTC"


@dataclass(frozen=True)
class RolloutSpec:
    selector: LabelSelector
    namespaces: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    suspend: bool = False
    verify_timeout: float = 600.0
    settle_time: float = 30.0  # new pods stay Ready this long before a rollout is complete
    waves: tuple[Wave, ...] = ()
    pause_between_waves: float = 0.0
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    max_concurrent: int = 0  # 0: unlimited
    patch_gitops_managed: bool = False  # patch workloads a GitOps controller manages?


@dataclass(frozen=True)
class IgnoredFinding:
    id: str
    expires: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class SignatureGate:
    type: str = "any"  # any | cosign | notation
    public_key: str = ""  # PEM; when set, signatures are verified, not just found


@dataclass(frozen=True)
class VulnerabilityGate:
    max_severity: str = "HIGH"
    max_report_age: float = 0.0  # seconds; 0: any age
    source: str = "any"  # any | referrer | cluster
    ignore: tuple[IgnoredFinding, ...] = ()


@dataclass(frozen=True)
class SmokeTestGate:
    template: Mapping[str, Any]  # a batch/v1 JobSpec (run in core.sandbox's sandbox)
    timeout: float = 300.0
    container: str = ""  # default: the first container


@dataclass(frozen=True)
class ValidationSpec:
    signature: SignatureGate | None = None
    vulnerabilities: VulnerabilityGate | None = None
    smoke_test: SmokeTestGate | None = None


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


def _selector(raw: Mapping[str, Any] | None, policy_name: str) -> LabelSelector:
    if not raw:
        return LabelSelector({POLICY_LABEL: policy_name})
    expressions = tuple(
        (e["key"], e["operator"], tuple(e.get("values") or ()))
        for e in raw.get("matchExpressions") or ()
    )
    return LabelSelector(dict(raw.get("matchLabels") or {}), expressions)


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

    rollout_raw = spec.get("rollout") or {}
    rollout = RolloutSpec(
        selector=_selector(rollout_raw.get("selector"), name),
        namespaces=tuple(rollout_raw.get("namespaces") or ()),
        containers=tuple(rollout_raw.get("containers") or ()),
        suspend=bool(rollout_raw.get("suspend", False)),
        verify_timeout=parse_duration(str(rollout_raw.get("verifyTimeout") or "10m")),
        settle_time=parse_duration(str(rollout_raw.get("settleTime") or "30s")),
        waves=_waves(rollout_raw.get("waves") or ()),
        pause_between_waves=parse_duration(str(rollout_raw.get("pauseBetweenWaves") or "0s")),
        maintenance_windows=_windows(rollout_raw.get("maintenanceWindows") or ()),
        patch_gitops_managed=bool(rollout_raw.get("patchGitOpsManaged", False)),
        max_concurrent=int(rollout_raw.get("maxConcurrent") or 0),
    )
    if rollout.settle_time >= rollout.verify_timeout:
        raise InvalidSpec(
            f"spec.rollout.settleTime ({rollout.settle_time:g}s) must be shorter than "
            f"spec.rollout.verifyTimeout ({rollout.verify_timeout:g}s): a rollout could "
            "never be complete in time"
        )
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
        validation=_validation(spec.get("validation") or {}),
    )


SEVERITIES = ("NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def _waves(raw: Any) -> tuple[Wave, ...]:
    waves = []
    for i, wave in enumerate(raw):
        count, percent = int(wave.get("count") or 0), int(wave.get("percent") or 0)
        if bool(count) == bool(percent) or count < 0 or not 0 <= percent <= 100:
            raise InvalidSpec(
                f"spec.rollout.waves[{i}]: set exactly one of count (>=1) or percent (1..100)"
            )
        waves.append(Wave(count, percent))
    return tuple(waves)


def _windows(raw: Any) -> tuple[MaintenanceWindow, ...]:
    from croniter import croniter  # local: only policies with windows need it

    windows = []
    for i, window in enumerate(raw):
        where = f"spec.rollout.maintenanceWindows[{i}]"
        schedule = str(window.get("schedule") or "")
        if not croniter.is_valid(schedule):
            raise InvalidSpec(f"{where}.schedule: {schedule!r} is not a cron expression")
        zone = str(window.get("timeZone") or "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSpec(f"{where}.timeZone: unknown time zone {zone!r}") from None
        duration = parse_duration(str(window.get("duration") or ""))
        if duration <= 0:
            raise InvalidSpec(f"{where}.duration: must be longer than 0s")
        windows.append(MaintenanceWindow(schedule, duration, zone))
    return tuple(windows)


def _timestamp(text: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidSpec(f"{where}: {text!r} is not an RFC 3339 date-time") from None
    if when.tzinfo is None:
        raise InvalidSpec(f"{where}: {text!r} has no time zone offset")
    return when


def _validation(raw: Mapping[str, Any]) -> ValidationSpec:
    signature = vulnerabilities = smoke = None
    if "signature" in raw:
        sig = raw.get("signature") or {}
        kind = str(sig.get("type") or "any")
        if kind not in ("any", "cosign", "notation"):
            raise InvalidSpec(
                f"spec.validation.signature.type: {kind!r} is not any|cosign|notation"
            )
        signature = SignatureGate(kind, str(sig.get("publicKey") or ""))
    if "vulnerabilities" in raw:
        vul = raw.get("vulnerabilities") or {}
        severity = str(vul.get("maxSeverity") or "HIGH").upper()
        if severity not in SEVERITIES:
            raise InvalidSpec(
                f"spec.validation.vulnerabilities.maxSeverity: {severity!r} is not one of "
                + ", ".join(SEVERITIES)
            )
        source = str(vul.get("source") or "any")
        if source not in ("any", "referrer", "cluster"):
            raise InvalidSpec(
                f"spec.validation.vulnerabilities.source: {source!r} is not any|referrer|cluster"
            )
        ignore = tuple(
            IgnoredFinding(
                str(item["id"]),
                _timestamp(
                    str(item["expires"]), f"spec.validation.vulnerabilities.ignore[{i}].expires"
                )
                if item.get("expires")
                else None,
                str(item.get("reason") or ""),
            )
            for i, item in enumerate(vul.get("ignore") or ())
        )
        vulnerabilities = VulnerabilityGate(
            severity,
            parse_duration(str(vul["maxReportAge"])) if vul.get("maxReportAge") else 0.0,
            source,
            ignore,
        )
    if "smokeTest" in raw:
        smoke_raw = raw.get("smokeTest") or {}
        template = smoke_raw.get("template")
        containers = (((template or {}).get("template") or {}).get("spec") or {}).get(
            "containers"
        ) or []
        if not isinstance(template, Mapping) or not containers:
            raise InvalidSpec(
                "spec.validation.smokeTest.template: a JobSpec with template.spec.containers"
            )
        if smoke_raw.get("namespace"):
            raise InvalidSpec(
                "spec.validation.smokeTest.namespace: smoke tests run in the operator's "
                "sandbox namespace; remove it"
            )
        from imagedrift.core.sandbox import refusals  # local: a gate detail

        refused = refusals(template)
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise InvalidSpec(refused[0] + more)
        wanted = str(smoke_raw.get("container") or "")
        if wanted and wanted not in {c.get("name") for c in containers}:
            raise InvalidSpec(
                f"spec.validation.smokeTest.container: no container {wanted!r} in the template"
            )
        smoke = SmokeTestGate(
            dict(template), parse_duration(str(smoke_raw.get("timeout") or "5m")), wanted
        )
    return ValidationSpec(signature, vulnerabilities, smoke)

"""``imagedrift status [POLICY]``: what each ImagePolicy saw and is doing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from imagedrift.cli import render
from imagedrift.core.refs import short_digest

CONDITION_TYPES = ("Ready", "Reconciling", "Stalled")


def conditions(status: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The kstatus conditions by type (absent ones left out)."""
    out: dict[str, dict[str, str]] = {}
    for cond in status.get("conditions") or []:
        if cond.get("type") in CONDITION_TYPES:
            out[str(cond["type"])] = {
                "status": str(cond.get("status", "Unknown")),
                "reason": str(cond.get("reason", "")),
                "message": str(cond.get("message", "")),
                "lastTransitionTime": str(cond.get("lastTransitionTime", "")),
            }
    return out


def summary(conds: Mapping[str, Mapping[str, str]]) -> str:
    """One word, kstatus order: Stalled > Reconciling > Ready > NotReady > Unknown."""
    if (conds.get("Stalled") or {}).get("status") == "True":
        return "Stalled"
    if (conds.get("Reconciling") or {}).get("status") == "True":
        return "Reconciling"
    ready = (conds.get("Ready") or {}).get("status")
    return {"True": "Ready", "False": "NotReady"}.get(ready or "", "Unknown")


def policy_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """One policy's entry in the ``PolicyStatusList`` document."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    base = status.get("base") or {}
    spec_base = spec.get("base") or {}
    workloads = status.get("workloads") or {}
    candidate = status.get("candidate") or {}
    conds = conditions(status)
    primary = conds.get("Stalled") if summary(conds) == "Stalled" else conds.get("Ready")
    return {
        "name": str(meta.get("name", "")),
        "suspended": bool((spec.get("rollout") or {}).get("suspend", False)),
        "observed": int(status.get("observedGeneration") or 0) == int(meta.get("generation") or 0),
        "base": {
            "image": str(base.get("image") or spec_base.get("image", "")),
            "tag": str(base.get("tag") or spec_base.get("tag", "")),
            "semverRange": str(spec_base.get("semverRange", "")),
            "digest": str(base.get("digest", "")),
            "shortDigest": short_digest(str(base.get("digest", ""))),
            "checkedAt": str(base.get("checkedAt", "")),
            "changedAt": str(base.get("changedAt", "")),
        },
        "workloads": {
            key: int(workloads.get(key) or 0)
            for key in ("optedIn", "upToDate", "drifted", "rollingOut")
        },
        "state": summary(conds),
        "reason": str((primary or {}).get("reason", "")),
        "message": str((primary or {}).get("message", "")),
        "conditions": conds,
        "candidate": {
            "image": str(candidate.get("image", "")),
            "tag": str(candidate.get("tag", "")),
            "digest": str(candidate.get("digest", "")),
            "verdict": str(candidate.get("verdict", "")),
            "reasons": [str(r) for r in candidate.get("reasons") or []],
        }
        if candidate
        else None,
        "lastError": str(status.get("lastError", "")),
    }


def build(bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return render.document("PolicyStatusList", items=[policy_summary(b) for b in bodies])


def _block(item: Mapping[str, Any], now: datetime, width: int) -> str:
    base, counts, cand = item["base"], item["workloads"], item["candidate"]
    tracked = base["tag"] or (f"semver {base['semverRange']}" if base["semverRange"] else "")
    head = f"{item['name']}  {item['state']}"
    if item["reason"]:
        head += f" ({item['reason']})"
    if item["suspended"]:
        head += "  [suspended]"
    pairs = [
        ("base", f"{base['image']}:{tracked}" if tracked else base["image"]),
        ("digest", base["shortDigest"] or render.NONE),
        ("checked", render.when(base["checkedAt"], now)),
        ("changed", render.when(base["changedAt"], now)),
        (
            "workloads",
            f"{counts['optedIn']} opted in, {counts['upToDate']} up to date, "
            f"{counts['drifted']} drifted, {counts['rollingOut']} rolling",
        ),
    ]
    for kind in ("Ready", "Reconciling", "Stalled"):
        cond = item["conditions"].get(kind)
        if cond:
            text = f"{cond['status']}  {cond['reason']}"
            if cond["message"]:
                text += f": {cond['message']}"
            pairs.append((kind.lower(), text))
    if cand:
        text = f"{cand['image']} @ {render.short(cand['digest'])}  {cand['verdict']}"
        if cand["reasons"]:
            text += " (" + "; ".join(cand["reasons"]) + ")"
        pairs.append(("candidate", text))
    else:
        pairs.append(("candidate", render.NONE))
    pairs.append(("last error", item["lastError"] or render.NONE))
    return head + "\n" + render.fields(pairs, width)


def table(doc: Mapping[str, Any], now: datetime, width: int = render.DEFAULT_WIDTH) -> str:
    """A summary row per policy, then one block per policy with the details."""
    items = doc["items"]
    if not items:
        return "No ImagePolicies found."
    rows = [
        [
            i["name"],
            i["base"]["shortDigest"].partition(":")[2],
            str(i["workloads"]["optedIn"]),
            str(i["workloads"]["upToDate"]),
            str(i["workloads"]["drifted"]),
            str(i["workloads"]["rollingOut"]),
            i["state"],
            i["reason"] + (" (suspended)" if i["suspended"] else ""),
            render.age(i["base"]["checkedAt"], now),
        ]
        for i in items
    ]
    headers = ["POLICY", "DIGEST", "OPTED", "OK", "DRIFT", "ROLL", "STATE", "REASON", "CHECKED"]
    blocks = [_block(i, now, width) for i in items]
    return render.table(headers, rows, width, shrink=7) + "\n\n" + "\n\n".join(blocks)

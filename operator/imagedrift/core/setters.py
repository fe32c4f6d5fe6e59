"""Where an image lives in a directory's YAML files, and the splices that set it there.

``plan_write_back`` returns the spans (``core.yamlsplice``) that set one container's image,
or why nothing may be written. The first kind of place found decides:

1. imagedrift's markers, a comment after a value: ``# {"$imagedrift": "<policy>"}`` (the full
   reference), ``"<policy>:tag"`` (``tag@digest`` when the reference has both, as Flux's
   markers do), ``"<policy>:name"``, ``"<policy>:digest"``.
2. Argo CD's ``.argocd-source-<app>.yaml``, as Argo CD Image Updater writes it (entries of
   ``kustomize.images``, ``[alias=]name:tag@digest``, or ``helm.parameters``); created if absent.
3. A Helm values file, at the dotted paths the caller names.
4. Kustomizations' ``images:`` entries, set as ``kustomize edit set image name=newName:tag@digest``
   does (``newTag``, ``digest``; keys it lacks are added).
5. The workload's own manifest: its container's ``image:``.

A value carrying Flux's ``# {"$imagepolicy": "ns:name[:field]"}`` belongs to Flux's image
automation: then nothing is written. Writes are all or nothing (half a reference is worse than
none), and checked: planned again on the edited text, they must find nothing left to do.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from yaml.nodes import Node, ScalarNode

from imagedrift.core import yamlsplice as ys
from imagedrift.core.refs import ImageRef
from imagedrift.core.yamlsplice import AliasNode, NotSpliceable, Span
from imagedrift.errors import InvalidReference

KUSTOMIZATIONS = frozenset({"kustomization.yaml", "kustomization.yml", "Kustomization"})
ARGOCD_HELM = ("image.name", "image.tag")  # Argo CD Image Updater's default parameters
_SECTIONS = {True: ("helm", "parameters"), False: ("kustomize", "images")}
# Where the pod spec is; Deployment, StatefulSet, DaemonSet, Job, ...: spec.template.spec.
_POD_SPEC = {"CronJob": ("spec", "jobTemplate", "spec", "template", "spec"), "Pod": ("spec",)}
_MARKER_FIELDS = {"": "full", "tag": "tag@digest", "name": "name", "digest": "digest"}
_COMMENT = re.compile(r"#[ \t]*(\{[^\n]*\})")


class Outcome(StrEnum):
    WRITE = "Write"  # files to commit
    UP_TO_DATE = "UpToDate"  # every place already holds the new image: nothing to commit
    REFUSED = "Refused"  # a place must not be edited: nothing is written
    NOT_FOUND = "NotFound"  # nothing in the files sets this image


@dataclass(frozen=True)
class ImageChange:
    """Set ``new_image`` (``registry/repo:tag@sha256:...``) where the files set the image of
    ``container`` of a workload now running ``old_image``; markers name the ``policy``."""

    policy: str
    kind: str
    namespace: str
    name: str
    container: str
    old_image: str
    new_image: str


@dataclass(frozen=True)
class Layout:
    """What the files cannot say themselves: where the caller knows the image is set."""

    values_file: str = ""  # a Helm values file, relative to the directory
    # Dotted paths (``\.`` escapes a dot); the last key names the part: tag (``@digest`` too
    # unless a digest path is given), digest, repository/repo/name, registry (refused), else all.
    helm_paths: tuple[str, ...] = ()
    target_namespace: str = ""  # where manifests without a namespace deploy ("" none)
    argocd_app: str = ""  # write .argocd-source-<app>.yaml
    argocd_helm: bool = False  # a Helm app (helm.parameters), else Kustomize (images)


@dataclass(frozen=True)
class FileEdit:
    path: str
    spans: tuple[Span, ...]
    text: str  # the file after the spans
    created: bool = False  # the file did not exist


@dataclass(frozen=True)
class WriteBack:
    outcome: Outcome
    reason: str
    files: tuple[FileEdit, ...] = ()
    refusals: tuple[str, ...] = ()  # each place that must not be edited, and why


@dataclass(frozen=True)
class _Edit:
    path: str
    span: Span | None  # None: the place already holds the new value
    what: str  # "path:line (what)"
    at: int = -1  # offset of the value replaced in place (-1: an insertion)


@dataclass(frozen=True)
class _Repo:
    files: Mapping[str, str]
    docs: Mapping[str, list[Node]]  # the YAML files that parse
    broken: Mapping[str, str]  # the YAML files that do not, and why
    change: ImageChange
    layout: Layout


@dataclass
class _Found:
    edits: list[_Edit] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def place(self, repo: _Repo, path: str, node: Node, role: str, what: str) -> None:
        """Set the ``role`` part of the new image at value ``node`` (unless it holds it)."""
        current, where = ys.scalar(node), f"{path}:{ys.line_of(node)} ({what})"
        want = _want(role, current, repo.change.new_image) if current is not None else None
        try:
            if want is None:
                raise NotSpliceable(f"line {ys.line_of(node)}: no {role} to set in {what}")
            span = None if current == want else ys.replace_scalar(repo.files[path], node, want)
            self.edits.append(_Edit(path, span, where, node.start_mark.index))
        except NotSpliceable as exc:
            self.refusals.append(f"{path}: {exc}")

    def insert(self, path: str, text: str, span: Span, what: str) -> None:
        where = f"{path}:{text.count(chr(10), 0, span.start) + 1} ({what})"
        self.edits.append(_Edit(path, span, where))


def _split(ref: str) -> tuple[str, str, str]:
    """(name, tag, digest) of a reference as written."""
    name, _, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    return (name[:colon], name[colon + 1 :], digest) if colon > slash else (name, "", digest)


def _same_name(a: str, b: str) -> bool:
    try:
        return a == b or ImageRef.parse(a).name == ImageRef.parse(b).name
    except InvalidReference:
        return False


def _want(role: str, current: str, new: str) -> str | None:
    """What a place of ``role`` that holds ``current`` must hold (None: ``new`` lacks it).
    A repository spelled differently (``nginx``, ``docker.io/library/nginx``) is kept."""
    name, tag, digest = _split(new)
    if role == "kustomize":  # an Argo CD kustomize.images entry: [alias=]reference
        alias, eq, rest = current.partition("=")
        return f"{alias}={_want('full', rest, new)}" if eq else _want("full", alias, new)
    old = _split(current)[0]
    name = old if _same_name(old, name) else name
    return {
        "full": name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else ""),
        "name": name,
        "tag": tag,
        "tag@digest": f"{tag}@{digest}" if tag and digest else tag,
        "digest": digest,
    }.get(role) or None


def _marker(comment: str) -> tuple[str, str, str] | None:
    """(tool, target, field) of a setter marker: ("imagedrift", "policy", "tag") or
    ("imagepolicy", "ns:name", ""); None when ``comment`` is not one."""
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    for tool, parts in (("imagedrift", 1), ("imagepolicy", 2)):
        value = data.get(f"${tool}") if isinstance(data, dict) else None
        if isinstance(value, str):
            pieces = value.split(":")
            return tool, ":".join(pieces[:parts]), ":".join(pieces[parts:])
    return None


def _markers(repo: _Repo) -> tuple[_Found, dict[tuple[str, int], str]]:
    """The places the policy's markers name, and Flux's markers by (path, value offset)."""
    found, flux, policy = _Found(), {}, repo.change.policy
    for path in sorted({*repo.docs, *repo.broken}):
        text, marked = repo.files[path], set()
        for node in (n for root in repo.docs.get(path, ()) for n in ys.walk(root)):
            comment = ys.trailing_comment(text, node)
            marker = _marker(comment) if isinstance(node, ScalarNode | AliasNode) else None
            if marker and marker[0] == "imagepolicy":
                flux[(path, node.start_mark.index)] = comment
            elif marker and marker[1] == policy:
                marked.add(ys.line_of(node))
                role = _MARKER_FIELDS.get(marker[2], f"field {marker[2]!r}")
                found.place(repo, path, node, role, f"marker {comment}")
        for match in _COMMENT.finditer(text):  # markers that follow no value
            line, marker = text.count("\n", 0, match.start()) + 1, _marker(match[1].strip())
            if marker and marker[:2] == ("imagedrift", policy) and line not in marked:
                why = repo.broken.get(path, "the marker is not after a value")
                found.refusals.append(f"{path}:{line}: a marker for {policy}, but {why}")
    return found, flux


def _manifests(repo: _Repo) -> _Found:
    found, change, matches = _Found(), repo.change, []
    workload = f"{change.kind} {change.namespace}/{change.name}"
    for path, root in ((p, r) for p, roots in sorted(repo.docs.items()) for r in roots):
        meta = ys.child(root, "metadata")
        namespace = ys.scalar(ys.child(meta, "namespace"))
        namespace = repo.layout.target_namespace if namespace is None else namespace
        seen = (ys.scalar(ys.child(root, "kind")), ys.scalar(ys.child(meta, "name")), namespace)
        matches += [(path, root)] if seen == (change.kind, change.name, change.namespace) else []
    if len(matches) > 1:
        where = ", ".join(f"{path}:{ys.line_of(root)}" for path, root in matches)
        found.refusals.append(f"{len(matches)} manifests match {workload}: {where}")
    for path, root in matches[:1] if len(matches) == 1 else ():
        text, spec = repo.files[path], _POD_SPEC.get(change.kind, ("spec", "template", "spec"))
        try:
            images = [
                ys.lookup(text, item, ["image"]) or item
                for key in ("containers", "initContainers")
                for item in ys.entries(text, ys.lookup(text, root, (*spec, key)))
                if ys.scalar(ys.child(item, "name")) == change.container
            ]
            if len(images) != 1:
                raise NotSpliceable(f"{workload} has {len(images)} {change.container!r}")
            found.place(repo, path, images[0], "full", "container image")
        except NotSpliceable as exc:
            found.refusals.append(f"{path}: {exc}")
    return found


def _sets(entry: Node) -> str:
    """The image a kustomization's images entry sets: newName when set, else name."""
    return ys.scalar(ys.child(entry, "newName") or ys.child(entry, "name")) or ""


def _kustomizations(repo: _Repo) -> _Found:
    found, old_name = _Found(), _split(repo.change.old_image)[0]
    new_name, tag, digest = _split(repo.change.new_image)
    for path in sorted({*repo.docs, *repo.broken}):
        text, roots = repo.files[path], repo.docs.get(path)
        if posixpath.basename(path) not in KUSTOMIZATIONS:
            continue
        try:
            if not roots:
                raise NotSpliceable(repo.broken.get(path, "it is empty"))
            images = ys.entries(text, ys.lookup(text, roots[0], ["images"]))
            hits = [e for e in images if any(_same_name(_sets(e), n) for n in (old_name, new_name))]
            if len(hits) > 1:
                raise NotSpliceable(f"{len(hits)} images entries match {old_name}")
            for entry in hits:
                ys.unshared(text, entry)
                wanted = [("newTag", "tag", tag), ("digest", "digest", digest)]
                if ys.child(entry, "newName") or not _same_name(_sets(entry), new_name):
                    wanted.insert(0, ("newName", "name", new_name))
                missing = [(k, ys.render(v)) for k, _, v in wanted if v and not ys.child(entry, k)]
                for key, role, _ in (w for w in wanted if w[2] and ys.child(entry, w[0])):
                    found.place(repo, path, ys.child(entry, key) or entry, role, key)
                if missing:
                    span = ys.insert_in_mapping(text, entry, missing)
                    found.insert(path, text, span, "images entry: " + ", ".join(dict(missing)))
        except NotSpliceable as exc:
            found.refusals.append(f"{path}: {exc}")
    return found


def _roles(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(path, role) of each of ``Layout.helm_paths``: the role its last key names."""
    lasts = [path.rpartition(".")[2].lower() for path in paths]
    tag = "tag" if "digest" in lasts else "tag@digest"
    roles = {"tag": tag, "digest": "digest", "registry": "registry alone", "name": "name"}
    roles |= {"repository": "name", "repo": "name"}
    return [(path, roles.get(last, "full")) for path, last in zip(paths, lasts, strict=True)]


def _helm(repo: _Repo) -> _Found:
    found, path = _Found(), repo.layout.values_file
    roots = repo.docs.get(path) or []
    if path and (not roots or not repo.layout.helm_paths):
        found.refusals.append(f"{path}: no such Helm values file (or it is empty), or no paths")
    for spec, role in _roles(repo.layout.helm_paths) if roots else ():
        try:
            node = ys.lookup(repo.files[path], roots[0], spec)
            if node is None:
                raise NotSpliceable(f"there is no value at {spec}")
            found.place(repo, path, node, role, f"Helm value {spec}")
        except NotSpliceable as exc:
            found.refusals.append(f"{path}: {exc}")
    return found


def _argocd(repo: _Repo) -> _Found:
    found, helm = _Found(), repo.layout.argocd_helm
    old, new = repo.change.old_image, repo.change.new_image
    path, section = f".argocd-source-{repo.layout.argocd_app}.yaml", _SECTIONS[helm]
    text, roots, where = repo.files.get(path), repo.docs.get(path), ".".join(section)
    # Helm: a parameter per path; Kustomize: one images entry, found by the image's name.
    params = _roles(repo.layout.helm_paths or ARGOCD_HELM) if helm else [(old, "kustomize")]
    items = {}
    for spec, role in params:
        value = _want(role, old, new) or ""
        if not value:
            found.refusals.append(f"{path}: {new} has no {role} for {spec}")
        pair = [f"name: {ys.render(spec)}", f"value: {ys.render(value)}", "forcestring: true"]
        items[spec] = pair if helm else [ys.render(value)]
    lines = [f"{section[0]}:", f"  {section[1]}:"]  # a new file, as Image Updater's yaml.v2
    lines += [("    " if i else "  - ") + s for it in items.values() for i, s in enumerate(it)]
    try:
        if text is None:
            found.insert(path, "", Span(0, 0, "".join(f"{line}\n" for line in lines)), "new file")
            return found
        seq = ys.lookup(text, roots[0], section) if roots else None
        if seq is None:
            raise NotSpliceable(repo.broken.get(path) or f"it has no {where} list")
        missing = []
        for spec, role in params:
            hits = [e for e in ys.entries(text, seq) if _argocd_entry(e, spec, helm, new)]
            if len(hits) > 1:
                raise NotSpliceable(f"{len(hits)} {where} entries for {spec}")
            if not hits:
                missing.append(items[spec])
            else:
                node = (ys.lookup(text, hits[0], ["value"]) or hits[0]) if helm else hits[0]
                found.place(repo, path, node, role, f"{where} entry {spec}")
        if missing:
            found.insert(path, text, ys.append_items(text, seq, missing), f"{where}: new entry")
    except NotSpliceable as exc:
        found.refusals.append(f"{path}: {exc}")
    return found


def _argocd_entry(entry: Node, spec: str, helm: bool, new: str) -> bool:
    """Whether ``entry`` sets ``spec``: a parameter by name, an image by a name (before or
    after ``=``) of the ``spec`` image or, once set and if it moved, of ``new``."""
    if helm:
        return ys.scalar(ys.child(entry, "name")) == spec
    alias, _, ref = (ys.scalar(entry) or "").partition("=")  # [alias=]reference
    return any(_same_name(part, image) for part in (alias, ref) if part for image in (spec, new))


def plan_write_back(
    files: Mapping[str, str], change: ImageChange, layout: Layout | None = None
) -> WriteBack:
    """Where to set ``change.new_image`` in ``files`` (relative path -> text), as splices.
    Pure and total: what does not parse or cannot be edited in place is a reason, never an
    exception. A ``WRITE`` result was checked: applied and planned again, it is up to date."""
    layout = layout or Layout()
    result = _plan(files, change, layout)
    if result.outcome is Outcome.WRITE:
        check = _plan({**files, **{f.path: f.text for f in result.files}}, change, layout)
        if check.outcome is not Outcome.UP_TO_DATE:
            why = f"the edited files would not read back as {change.new_image}: {check.reason}"
            return WriteBack(Outcome.REFUSED, why, refusals=(why,))
    return result


def _plan(files: Mapping[str, str], change: ImageChange, layout: Layout) -> WriteBack:
    try:
        old_name = ImageRef.parse(change.old_image).name
        ImageRef.parse(change.new_image)
    except InvalidReference as exc:
        return WriteBack(Outcome.REFUSED, f"an image does not parse: {exc}", refusals=(str(exc),))
    docs, broken = ys.parse_files(
        files,
        lambda p: f"/{p}".endswith((".yaml", ".yml", "/Kustomization")) or p == layout.values_file,
    )
    repo = _Repo(files, docs, broken, change, layout)
    marked, flux = _markers(repo)
    argocd, helm = (_argocd(repo) if layout.argocd_app else _Found()), _helm(repo)
    kinds = [marked, argocd, helm, _kustomizations(repo), _manifests(repo)]  # by precedence
    refusals = [  # Flux owns a place of any kind: writing any other would fight it
        f"{e.what}: Flux's marker {flux[(e.path, e.at)]} says Flux's image automation owns it"
        for e in (edit for found in kinds for edit in found.edits)
        if (e.path, e.at) in flux
    ]
    chosen = next((found for found in kinds if found.edits or found.refusals), _Found())
    refusals += chosen.refusals
    spans: dict[str, list[Span]] = {}
    for edit in chosen.edits:
        if edit.span:
            spans.setdefault(edit.path, []).append(edit.span)
    done = ", ".join(edit.what for edit in chosen.edits if edit.span or not spans)
    try:
        if refusals:
            raise ValueError("; ".join(refusals))
        edits = tuple(
            FileEdit(path, tuple(sorted(s)), ys.apply(files.get(path, ""), s), path not in files)
            for path, s in sorted(spans.items())
        )
    except ValueError as exc:  # refused, or two places overlap (a value set twice)
        return WriteBack(Outcome.REFUSED, str(exc), refusals=tuple(refusals) or (str(exc),))
    if edits or chosen.edits:
        outcome, verb = (Outcome.WRITE, "set") if edits else (Outcome.UP_TO_DATE, "already")
        return WriteBack(outcome, f"{verb} {change.new_image} at {done}", edits)
    where = f"{change.kind} {change.namespace}/{change.name} container {change.container}"
    why = f"no marker for {change.policy}, no images entry for {old_name}, no manifest"
    unread = "".join(f"; {why}" for why in sorted(broken.values()))
    return WriteBack(Outcome.NOT_FOUND, f"nothing sets the image of {where}: {why}{unread}")

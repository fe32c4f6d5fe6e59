"""Splicing YAML (imagedrift.core.yamlsplice) and finding where an image is set
(imagedrift.core.setters): golden files, then tables.

Each case under ``golden/yaml/<case>/`` holds ``input/`` (a directory as a repository has
it), ``change.json`` (the ImageChange and the Layout) and ``expected/`` (every file the write
changes or creates, byte for byte: CRLF and BOM included). The test checks the output equals
the golden file, and that a line diff between input and output touches only the lines that
hold the changed values (or the lines inserted). After a deliberate change, rewrite the
expected files and review their diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_yamlsplice.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
from yaml.nodes import Node, SequenceNode

from imagedrift.core import yamlsplice as ys
from imagedrift.core.setters import (
    FileEdit,
    ImageChange,
    Layout,
    Outcome,
    WriteBack,
    plan_write_back,
)

GOLDEN_DIR = Path(__file__).parent / "golden" / "yaml"
UPDATE_ENV = "UPDATE_GOLDEN"
CASES = sorted(p.name for p in GOLDEN_DIR.iterdir() if p.is_dir())

DIGEST = "sha256:" + "ab" * 32
NEW = f"registry.example.com/shop/storefront:1.4.2@{DIGEST}"
OLD = "registry.example.com/shop/storefront:1.4.1"
CHANGE = ImageChange("storefront", "Deployment", "shop", "storefront", "app", OLD, NEW)


def read_tree(root: Path) -> dict[str, str]:
    """path -> text, decoded without touching line ends or a BOM (which stays U+FEFF)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes().decode("utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def load_case(name: str) -> tuple[dict[str, str], ImageChange, Layout]:
    spec = json.loads((GOLDEN_DIR / name / "change.json").read_text(encoding="utf-8"))
    layout = spec.pop("layout")
    layout["helm_paths"] = tuple(layout.get("helm_paths", ()))
    return read_tree(GOLDEN_DIR / name / "input"), ImageChange(**spec), Layout(**layout)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset)


def assert_only_value_lines_changed(before: str, edit: FileEdit) -> None:
    """The line diff removes only lines that held a replaced value, adds only lines that hold
    new text, and the line count grows by exactly the lines inserted."""
    old_lines = before.splitlines(keepends=True)
    new_lines = edit.text.splitlines(keepends=True)
    touched: set[int] = set()
    inserted = 0
    for span in edit.spans:
        if span.start == span.end and (span.start == 0 or before[span.start - 1] == "\n"):
            inserted += span.text.count("\n")  # whole lines, between existing ones
            continue
        touched |= set(range(line_of(before, span.start), line_of(before, span.end) + 1))
        inserted += span.text.count("\n") - before[span.start : span.end].count("\n")
    new_texts = [line.strip() for span in edit.spans for line in span.text.splitlines() if line]
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        removed = set(range(i1, i2))
        assert removed <= touched, f"lines {sorted(removed - touched)} changed but hold no value"
        for line in new_lines[j1:j2]:
            assert any(text in line for text in new_texts), f"unexpected new line {line!r}"
    assert len(new_lines) - len(old_lines) == inserted


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    files, change, layout = load_case(name)
    result = plan_write_back(files, change, layout)
    assert result.outcome is Outcome.WRITE, result.reason
    expected_dir = GOLDEN_DIR / name / "expected"
    if os.environ.get(UPDATE_ENV) == "1":
        for edit in result.files:
            out = expected_dir / edit.path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(edit.text.encode("utf-8"))
        return
    expected = read_tree(expected_dir) if expected_dir.is_dir() else {}
    assert {edit.path for edit in result.files} == set(expected), f"rerun with {UPDATE_ENV}=1"
    for edit in result.files:
        before = files.get(edit.path)
        assert edit.created == (before is None)
        assert edit.text == ys.apply(before or "", edit.spans)
        if edit.text != expected[edit.path]:
            diff = "".join(
                difflib.unified_diff(
                    expected[edit.path].splitlines(keepends=True),
                    edit.text.splitlines(keepends=True),
                    f"golden/yaml/{name}/expected/{edit.path}",
                    "this run",
                )
            )
            raise AssertionError(f"{name}: output differs (rerun with {UPDATE_ENV}=1):\n{diff}")
        if before is not None:
            assert_only_value_lines_changed(before, edit)
            assert before.startswith("\ufeff") == edit.text.startswith("\ufeff")
            if "\r\n" in before:  # CRLF files stay CRLF, new lines included
                assert edit.text.count("\n") == edit.text.count("\r\n")
    again = plan_write_back({**files, **{e.path: e.text for e in result.files}}, change, layout)
    assert again.outcome is Outcome.UP_TO_DATE, again.reason


def test_golden_corpus_is_varied() -> None:
    texts = [text for name in CASES for text in load_case(name)[0].values()]
    assert len(CASES) >= 22
    assert any(t.startswith("\ufeff") for t in texts)
    assert any("\r\n" in t for t in texts)
    assert any("\t" in t for t in texts)
    assert any("$imagepolicy" in t for t in texts) and any("$imagedrift" in t for t in texts)
    assert any("\n...\n" in t for t in texts) and any("&" in t and "*" in t for t in texts)


# -- yamlsplice: offsets, quoting, splicing ------------------------------------------------


def scalar_at(text: str, *keys: str) -> Node:
    node = ys.lookup(text, ys.documents(text)[0], keys)
    assert node is not None
    return node


@pytest.mark.parametrize(
    ("label", "text"),
    [
        ("LF", "a: 1\nimage: old:1 # keep\nz: 2\n"),
        ("CRLF", "a: 1\r\nimage: old:1 # keep\r\nz: 2\r\n"),
        ("BOM", "\ufeffa: 1\nimage: old:1 # keep\nz: 2\n"),
        ("BOM and CRLF", "\ufeffa: 1\r\nimage: old:1 # keep\r\nz: 2\r\n"),
        ("no final newline", "a: 1\nimage: old:1 # keep\nz: 2"),
    ],
)
def test_marks_index_the_characters_of_the_text(label: str, text: str) -> None:
    node = scalar_at(text, "image")
    assert text[node.start_mark.index : node.end_mark.index] == "old:1", label
    out = ys.apply(text, [ys.replace_scalar(text, node, "new:2")])
    assert out == text.replace("old:1", "new:2")


@pytest.mark.parametrize(
    ("label", "source", "value", "expected"),
    [
        ("plain stays plain", "k: a:1", "b:2", "k: b:2"),
        ("single stays single", "k: 'a'", "it's", "k: 'it''s'"),
        ("double stays double", 'k: "a"', 'say "hi"', 'k: "say \\"hi\\""'),
        ("plain float-like is quoted", "k: 1.9", "2.0", 'k: "2.0"'),
        ("plain YAML 1.2 number is quoted", "k: v1", "1e3", 'k: "1e3"'),
        ("plain boolean-like is quoted", "k: v1", "yes", 'k: "yes"'),
        ("plain with ' #' is quoted", "k: v1", "a #b", 'k: "a #b"'),
        ("plain with ': ' is quoted", "k: v1", "a: b", 'k: "a: b"'),
        ("plain leading indicator is quoted", "k: v1", "@x", 'k: "@x"'),
        ("flow context keeps plain", "{k: a:1, z: 2}", "b:2@sha256:00", "{k: b:2@sha256:00, z: 2}"),
        ("flow indicator is quoted", "[a, b]", "c,d", '["c,d", b]'),
    ],
)
def test_replace_scalar_keeps_or_chooses_style(
    label: str, source: str, value: str, expected: str
) -> None:
    root = ys.documents(source)[0]
    node = root.value[0] if isinstance(root, SequenceNode) else root.value[0][1]
    assert ys.apply(source, [ys.replace_scalar(source, node, value)]) == expected, label
    root = ys.documents(expected)[0]
    first = root.value[0] if isinstance(root, SequenceNode) else root.value[0][1]
    assert ys.scalar(first) == value  # and reads back as the very string


@pytest.mark.parametrize(
    ("label", "text", "keys", "why"),
    [
        ("alias", "a: &x v\nb: *x\n", ("b",), r"alias \*x"),
        ("anchored value", "a: &x v\nb: *x\n", ("a",), "anchor &x"),
        ("explicit tag", "a: !!str 5\n", ("a",), "explicit tag !!str"),
        ("literal block", "a: |\n  v\n", ("a",), "block scalar"),
        ("folded block", "a: >-\n  v\n", ("a",), "block scalar"),
        ("empty", "a:\nb: 1\n", ("a",), "empty"),
        ("multi-line plain", "a: one\n  two\n", ("a",), "several lines"),
        ("mapping", "a: {b: 1}\n", ("a",), "not a single value"),
    ],
)
def test_values_that_cannot_be_spliced(
    label: str, text: str, keys: tuple[str, ...], why: str
) -> None:
    node = ys.child(ys.documents(text)[0], keys[0])
    assert node is not None
    with pytest.raises(ys.NotSpliceable, match=why):
        ys.replace_scalar(text, node, "new")


def test_aliases_are_not_followed() -> None:
    text = "base: &b {image: a}\nuse: *b\n"
    root = ys.documents(text)[0]
    alias = ys.child(root, "use")
    assert isinstance(alias, ys.AliasNode) and alias.anchor == "b"
    assert text[alias.start_mark.index : alias.end_mark.index] == "*b"
    assert ys.scalar(ys.child(root, "base")) is None
    assert sum(1 for n in ys.walk(root) if ys.scalar(n) == "a") == 1  # not twice
    with pytest.raises(ys.NotSpliceable, match="alias"):
        ys.lookup(text, root, ["use", "image"])


@pytest.mark.parametrize(
    ("text", "keys", "why"),
    [
        ("d: &d {x: 1}\na:\n  <<: *d\n", "a.x", "merge key"),
        ("a: &s\n  x: 1\n", "a.x", "inside &s"),
    ],
)
def test_lookup_refuses_shared_places(text: str, keys: str, why: str) -> None:
    with pytest.raises(ys.NotSpliceable, match=why):
        ys.lookup(text, ys.documents(text)[0], keys)


def test_lookup_dotted_paths_escape_dots() -> None:
    text = 'annotations:\n  "prometheus.io/port": "9090"\n'
    node = ys.lookup(text, ys.documents(text)[0], r"annotations.prometheus\.io/port")
    assert ys.scalar(node) == "9090"
    assert ys.lookup(text, ys.documents(text)[0], "annotations.missing") is None


@pytest.mark.parametrize(
    ("text", "line"),
    [("a: [1, 2\n", 2), ("a: b: c\n", 1), ("a: 1\n b: 2\n", 2), ("x: *nope\n", 1)],
)
def test_syntax_errors_name_the_line(text: str, line: int) -> None:
    with pytest.raises(ys.YamlSyntaxError, match=f"line {line}"):
        ys.documents(text)


def test_documents_keeps_every_document() -> None:
    text = "--- # one\na: 1\n...\n---\nb: 2\n--- []\n"
    kinds = [type(n).__name__ for n in ys.documents(text)]
    assert kinds == ["MappingNode", "MappingNode", "SequenceNode"]


@pytest.mark.parametrize(
    ("spans", "error"),
    [
        ([ys.Span(0, 3, "x"), ys.Span(2, 4, "y")], "overlap"),
        ([ys.Span(1, 1, "x"), ys.Span(1, 1, "y")], "overlap"),
        ([ys.Span(5, 99, "x")], "outside"),
    ],
)
def test_apply_refuses_ambiguous_spans(spans: list[ys.Span], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ys.apply("0123456789", spans)


def test_apply_is_back_to_front() -> None:
    text = "a: 1\nb: 2\n"
    spans = [ys.Span(8, 9, "22"), ys.Span(3, 4, "11"), ys.Span(5, 5, "c: 0\n")]
    assert ys.apply(text, spans) == "a: 11\nc: 0\nb: 22\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("l:\n  - a # c\n  - b\nz: 1\n", "l:\n  - a # c\n  - b\n  - new\nz: 1\n"),
        ("l:\n-   a\n", "l:\n-   a\n-   new\n"),
        ("l: [a, b]  # c\n", "l: [a, b, new]  # c\n"),
        ("l: []\n", "l: [new]\n"),
        ("l:\r\n- a", "l:\r\n- a\r\n- new"),
    ],
)
def test_append_items_copies_the_last_entry(text: str, expected: str) -> None:
    seq = ys.child(ys.documents(text)[0], "l")
    assert seq is not None
    assert ys.apply(text, [ys.append_items(text, seq, [["new"]])]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- name: a\n  tag: 1 # c\n- name: b\n", "- name: a\n  tag: 1 # c\n  d: x\n- name: b\n"),
        ("- {name: a, tag: 1}\n", "- {name: a, tag: 1, d: x}\n"),
        (
            "-   name: a\n    more:\n      deep: 1\n\n# next\n- b\n",
            "-   name: a\n    more:\n      deep: 1\n    d: x\n\n# next\n- b\n",
        ),
    ],
)
def test_insert_in_mapping_uses_its_indentation(text: str, expected: str) -> None:
    entry = ys.documents(text)[0].value[0]
    assert ys.apply(text, [ys.insert_in_mapping(text, entry, [("d", "x")])]) == expected


def test_insert_after_a_block_scalar_is_refused() -> None:
    text = "- name: a\n  script: |\n    echo\n"
    with pytest.raises(ys.NotSpliceable, match="no line to add after"):
        ys.insert_in_mapping(text, ys.documents(text)[0].value[0], [("d", "x")])


def test_trailing_comment_is_the_comment_on_the_values_line() -> None:
    text = 'a: v   #  {"k": 1}\t\nb: "x #y"\nc: [d] # e\n'
    root = ys.documents(text)[0]
    comments = {}
    for key in ("a", "b", "c"):
        node = ys.child(root, key)
        assert node is not None
        comments[key] = ys.trailing_comment(text, node)
    assert comments == {"a": '{"k": 1}', "b": "", "c": "e"}


# -- setters: each kind of place, and each refusal ------------------------------------------

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: storefront
  namespace: shop
spec:
  template:
    spec:
      containers:
      - name: app
        image: {image}
"""


def plan(files: dict[str, str], layout: Layout | None = None, **change: str) -> WriteBack:
    fields = {**CHANGE.__dict__, **change}
    return plan_write_back(files, ImageChange(**fields), layout)


def written(result: WriteBack) -> dict[str, str]:
    assert result.outcome is Outcome.WRITE, result.reason
    return {edit.path: edit.text for edit in result.files}


@pytest.mark.parametrize(
    ("label", "marker", "value", "expected"),
    [
        ("full", "storefront", OLD, NEW),
        ("tag with digest", "storefront:tag", "1.4.1", f"1.4.2@{DIGEST}"),
        ("name", "storefront:name", "registry.example.com/old/name", NEW.split(":")[0]),
        ("digest", "storefront:digest", "sha256:00", DIGEST),
    ],
)
def test_imagedrift_markers(label: str, marker: str, value: str, expected: str) -> None:
    text = f'v: {value} # {{"$imagedrift": "{marker}"}}\nother: {value} # {{"$imagedrift": "x"}}\n'
    out = written(plan({"a.yaml": text}))["a.yaml"]
    assert out == text.replace(f"v: {value}", f"v: {expected}", 1), label


def test_a_manifest_image() -> None:
    out = written(plan({"d.yaml": DEPLOY.format(image=OLD)}))
    assert out == {"d.yaml": DEPLOY.format(image=NEW)}


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("StatefulSet", "spec:\n  template:\n    spec:\n"),
        ("DaemonSet", "spec:\n  template:\n    spec:\n"),
        ("CronJob", "spec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n"),
    ],
)
def test_workload_kinds(kind: str, path: str) -> None:
    indent = " " * (path.count("\n") * 2)
    text = (
        f"kind: {kind}\nmetadata: {{name: storefront, namespace: shop}}\n{path}"
        f"{indent}initContainers:\n{indent}- name: app\n{indent}  image: {OLD}\n"
    )
    assert written(plan({"w.yaml": text}, kind=kind))["w.yaml"] == text.replace(OLD, NEW)


@pytest.mark.parametrize(
    ("label", "namespace_line", "target", "outcome"),
    [
        ("explicit namespace", "  namespace: shop\n", "", Outcome.WRITE),
        ("other namespace", "  namespace: staging\n", "shop", Outcome.NOT_FOUND),
        ("absent, target namespace matches", "", "shop", Outcome.WRITE),
        ("absent, no target namespace", "", "", Outcome.NOT_FOUND),
        ("absent, other target namespace", "", "staging", Outcome.NOT_FOUND),
    ],
)
def test_manifest_namespace(label: str, namespace_line: str, target: str, outcome: Outcome) -> None:
    text = DEPLOY.format(image=OLD).replace("  namespace: shop\n", namespace_line)
    result = plan({"d.yaml": text}, Layout(target_namespace=target))
    assert result.outcome is outcome, label


@pytest.mark.parametrize(
    ("label", "entry", "expected"),
    [
        (
            "newTag edited, digest added",
            "- name: registry.example.com/shop/storefront\n  newTag: 1.4.1\n",
            f"- name: registry.example.com/shop/storefront\n  newTag: 1.4.2\n  digest: {DIGEST}\n",
        ),
        (
            "matched by newName",
            f"- name: app\n  newName: {OLD.split(':')[0]}\n  digest: sha256:{'0' * 64}\n",
            f"- name: app\n  newName: {OLD.split(':')[0]}\n  digest: {DIGEST}\n  newTag: 1.4.2\n",
        ),
        (
            "name and newName both missing a tag",
            "- name: registry.example.com/shop/storefront\n",
            f"- name: registry.example.com/shop/storefront\n  newTag: 1.4.2\n  digest: {DIGEST}\n",
        ),
    ],
)
def test_kustomization_images(label: str, entry: str, expected: str) -> None:
    other = "- name: nginx\n  newTag: 1.27.0\n"
    text = f"images:\n{entry}{other}"
    out = written(plan({"base/kustomization.yaml": text}))
    assert out == {"base/kustomization.yaml": f"images:\n{expected}{other}"}, label


def test_kustomization_wins_over_the_manifest_it_rewrites() -> None:
    files = {
        "kustomization.yaml": f"images:\n- name: {OLD.split(':')[0]}\n  newTag: 1.4.1\n",
        "d.yaml": DEPLOY.format(image=OLD),
    }
    assert set(written(plan(files))) == {"kustomization.yaml"}


@pytest.mark.parametrize(
    ("label", "paths", "values", "expected"),
    [
        (
            "repository and tag",
            ("image.repository", "image.tag"),
            "image:\n  repository: registry.example.com/shop/storefront\n  tag: 1.4.1\n",
            f"image:\n  repository: registry.example.com/shop/storefront\n  tag: 1.4.2@{DIGEST}\n",
        ),
        (
            "single image string",
            ("app.image",),
            f"app:\n  image: {OLD}\n",
            f"app:\n  image: {NEW}\n",
        ),
        (
            "tag and digest paths",
            ("image.tag", "image.digest"),
            "image:\n  tag: 1.4.1\n  digest: ''\n",
            f"image:\n  tag: 1.4.2\n  digest: '{DIGEST}'\n",
        ),
    ],
)
def test_helm_values(label: str, paths: tuple[str, ...], values: str, expected: str) -> None:
    out = written(
        plan({"values.yaml": values}, Layout(values_file="values.yaml", helm_paths=paths))
    )
    assert out == {"values.yaml": expected}, label


@pytest.mark.parametrize(
    ("label", "helm", "existing", "expected"),
    [
        ("create kustomize", False, None, f"kustomize:\n  images:\n  - {NEW}\n"),
        (
            "create helm",
            True,
            None,
            "helm:\n  parameters:\n  - name: image.name\n    value: "
            "registry.example.com/shop/storefront\n    forcestring: true\n  - name: image.tag\n"
            f"    value: 1.4.2@{DIGEST}\n    forcestring: true\n",
        ),
        (
            "edit an aliased kustomize image",
            False,
            f"kustomize:\n  images:\n  - app={OLD}\n",
            f"kustomize:\n  images:\n  - app={NEW}\n",
        ),
        (
            "append a kustomize image",
            False,
            "kustomize:\n  images:\n  - nginx:1.27\n",
            f"kustomize:\n  images:\n  - nginx:1.27\n  - {NEW}\n",
        ),
    ],
)
def test_argocd_source(label: str, helm: bool, existing: str | None, expected: str) -> None:
    path = ".argocd-source-storefront.yaml"
    files = {} if existing is None else {path: existing}
    result = plan(files, Layout(argocd_app="storefront", argocd_helm=helm))
    assert written(result) == {path: expected}, label
    assert result.files[0].created == (existing is None)


@pytest.mark.parametrize(
    ("label", "files", "layout", "words"),
    [
        (
            "Flux marker on the manifest image",
            {"d.yaml": DEPLOY.format(image=OLD + ' # {"$imagepolicy": "flux-system:storefront"}')},
            Layout(),
            '{"$imagepolicy": "flux-system:storefront"}',
        ),
        (
            "Flux tag marker on a kustomization",
            {
                "kustomization.yaml": "images:\n- name: registry.example.com/shop/storefront\n"
                '  newTag: 1.4.1 # {"$imagepolicy": "flux-system:storefront:tag"}\n'
            },
            Layout(),
            "flux-system:storefront:tag",
        ),
        (
            "Flux marker, even when our marker is elsewhere",
            {
                "a.yaml": 'v: 1.4.1 # {"$imagedrift": "storefront:tag"}\n',
                "d.yaml": DEPLOY.format(image=OLD + ' # {"$imagepolicy": "flux-system:s:digest"}'),
            },
            Layout(),
            "Flux's image automation owns it",
        ),
        (
            "alias",
            {"d.yaml": "i: &i " + OLD + "\n" + DEPLOY.format(image="*i")},
            Layout(),
            "alias *i",
        ),
        (
            "anchored image",
            {"d.yaml": DEPLOY.format(image="&i " + OLD)},
            Layout(),
            "anchor &i",
        ),
        (
            "merge key in Helm values",
            {"values.yaml": "d: &d\n  tag: 1.4.1\nimage:\n  <<: *d\n"},
            Layout(values_file="values.yaml", helm_paths=("image.tag",)),
            "merge key",
        ),
        (
            "two manifests",
            {"a.yaml": DEPLOY.format(image=OLD), "b.yaml": DEPLOY.format(image=OLD)},
            Layout(),
            "2 manifests match",
        ),
        (
            "container missing",
            {"d.yaml": DEPLOY.format(image=OLD).replace("name: app", "name: web")},
            Layout(),
            "has 0 'app'",
        ),
        (
            "Helm path missing",
            {"values.yaml": "image:\n  repository: x\n"},
            Layout(values_file="values.yaml", helm_paths=("image.tag",)),
            "no value at image.tag",
        ),
        (
            "Helm values file missing",
            {},
            Layout(values_file="values.yaml", helm_paths=("image.tag",)),
            "no such Helm values file",
        ),
        (
            "Helm values file does not parse",
            {"values.yaml": "image: [\n"},
            Layout(values_file="values.yaml", helm_paths=("image.tag",)),
            "no such Helm values file",
        ),
        (
            "kustomization does not parse",
            {"kustomization.yaml": "images: [\n"},
            Layout(),
            "does not parse",
        ),
        (
            "marker in a file that does not parse",
            {"t.yaml": '{{- if .Values.on }}\nimage: x # {"$imagedrift": "storefront"}\n'},
            Layout(),
            "does not parse",
        ),
        (
            "marker after no value",
            {"a.yaml": 'image: # {"$imagedrift": "storefront"}\n  repository: x\n'},
            Layout(),
            "not after a value",
        ),
        (
            "marker on an empty value",
            {"a.yaml": 'image: # {"$imagedrift": "storefront"}\nz: 1\n'},
            Layout(),
            "empty",
        ),
        (
            "marker with an unknown field",
            {"a.yaml": f'image: {OLD} # {{"$imagedrift": "storefront:version"}}\n'},
            Layout(),
            "field 'version'",
        ),
        (
            "marker on a block scalar's header",
            {"a.yaml": f'image: | # {{"$imagedrift": "storefront"}}\n  {OLD}\n'},
            Layout(),
            "not after a value",
        ),
        (
            "block scalar",
            {"d.yaml": DEPLOY.format(image=f"|\n          {OLD}")},
            Layout(),
            "block scalar",
        ),
        (
            "tab before the comment (PyYAML does not read it)",
            {"a.yaml": f'image: {OLD}\t# {{"$imagedrift": "storefront"}}\n'},
            Layout(),
            "does not parse",
        ),
        (
            "two kustomization entries",
            {
                "kustomization.yaml": "images:\n- name: registry.example.com/shop/storefront\n"
                "- name: registry.example.com/shop/storefront\n  newTag: x\n"
            },
            Layout(),
            "2 images entries",
        ),
        (
            "Argo CD source does not parse",
            {".argocd-source-storefront.yaml": "kustomize: [\n"},
            Layout(argocd_app="storefront"),
            "does not parse",
        ),
    ],
)
def test_refusals(label: str, files: dict[str, str], layout: Layout, words: str) -> None:
    result = plan(files, layout)
    assert result.outcome is Outcome.REFUSED, f"{label}: {result.outcome} {result.reason}"
    assert result.files == ()
    assert words in result.reason, result.reason
    assert result.refusals


def test_nothing_to_change_says_so() -> None:
    result = plan({"d.yaml": DEPLOY.format(image=NEW)})
    assert result.outcome is Outcome.UP_TO_DATE and result.files == ()
    assert "d.yaml:11" in result.reason


def test_the_same_repository_spelled_short_is_already_up_to_date() -> None:
    new = f"docker.io/library/nginx:1.27.1@{DIGEST}"
    text = DEPLOY.format(image=f"nginx:1.27.1@{DIGEST}")
    result = plan({"d.yaml": text}, old_image="nginx:1.27.0", new_image=new)
    assert result.outcome is Outcome.UP_TO_DATE, result.reason


@pytest.mark.parametrize(
    ("label", "files", "words"),
    [
        ("no place at all", {"README.md": "# shop\n"}, "nothing sets the image"),
        (
            "another policy's marker",
            {"a.yaml": f'image: {OLD} # {{"$imagedrift": "checkout"}}\n'},
            "no marker for storefront",
        ),
        (
            "an unrelated file that does not parse",
            {"templates/d.yaml": "{{- if .Values.on }}\nimage: x\n{{- end }}\n"},
            "templates/d.yaml does not parse",
        ),
    ],
)
def test_not_found(label: str, files: dict[str, str], words: str) -> None:
    result = plan(files)
    assert result.outcome is Outcome.NOT_FOUND, label
    assert words in result.reason and result.files == ()


@pytest.mark.parametrize(
    "change",
    [{"new_image": "Registry/UPPER:tag"}, {"old_image": "registry/app:bad tag"}],
)
def test_references_that_do_not_parse_are_refused(change: dict[str, str]) -> None:
    result = plan({"d.yaml": DEPLOY.format(image=OLD)}, None, **change)
    assert result.outcome is Outcome.REFUSED and "does not parse" in result.reason


def test_markers_decide_over_manifests() -> None:
    files = {
        "values.yaml": 'tag: 1.4.1 # {"$imagedrift": "storefront:tag"}\n',
        "d.yaml": DEPLOY.format(image=OLD),
    }
    assert set(written(plan(files))) == {"values.yaml"}


@pytest.mark.parametrize(
    ("label", "files", "layout", "expected"),
    [
        (
            "kustomization: newName added",
            {"kustomization.yaml": "images:\n- name: nginx\n  newTag: 1.27.0\n"},
            Layout(),
            "images:\n- name: nginx\n  newTag: 1.27.1\n  newName: mirror.example.com/nginx\n"
            f"  digest: {DIGEST}\n",
        ),
        (
            "Argo CD kustomize image",
            {".argocd-source-web.yaml": "kustomize:\n  images:\n  - nginx:1.27.0\n"},
            Layout(argocd_app="web"),
            f"kustomize:\n  images:\n  - mirror.example.com/nginx:1.27.1@{DIGEST}\n",
        ),
        (
            "manifest",
            {"d.yaml": DEPLOY.format(image="nginx:1.27.0")},
            Layout(),
            DEPLOY.format(image=f"mirror.example.com/nginx:1.27.1@{DIGEST}"),
        ),
    ],
)
def test_an_image_that_moved_to_another_repository(
    label: str, files: dict[str, str], layout: Layout, expected: str
) -> None:
    new = f"mirror.example.com/nginx:1.27.1@{DIGEST}"
    result = plan(files, layout, old_image="docker.io/library/nginx:1.27.0", new_image=new)
    assert list(written(result).values()) == [expected], label


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(ys.YamlSyntaxError, match="nested too deeply"):
        ys.documents("[" * 700 + "]" * 700)
    result = plan({"deep.yaml": "[" * 700 + "]" * 700, "d.yaml": DEPLOY.format(image=OLD)})
    assert result.outcome is Outcome.WRITE  # the unreadable file is skipped, not fatal


def test_duplicate_keys_are_refused() -> None:
    values = "image:\n  tag: 1.4.0\n  tag: 1.4.1\n"
    result = plan(
        {"values.yaml": values}, Layout(values_file="values.yaml", helm_paths=("image.tag",))
    )
    assert result.outcome is Outcome.REFUSED and "set twice" in result.reason


def test_a_separate_registry_value_is_refused_not_overwritten() -> None:
    values = "image:\n  registry: registry.example.com\n  repository: shop/storefront\n  tag: 1\n"
    paths = ("image.registry", "image.repository", "image.tag")
    result = plan({"values.yaml": values}, Layout(values_file="values.yaml", helm_paths=paths))
    assert result.outcome is Outcome.REFUSED and "image.registry" in result.reason

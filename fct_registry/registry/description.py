"""Markdown descriptions of registered versions, so the MLflow UI tells the story on its own.

Each version gets one plain-text lead line (MLflow's version lists show the description
as raw text, cut after a few words: no ``**`` or backticks there), then one compact, bordered
table about *that* version (what it is, what it links
to, how it measured, what it was trained from), followed by how to load it. The full
compatibility matrix of the family is on the compatibility page (``mlflow server --app-name
fct``, :data:`COMPATIBILITY_PAGE`), which every description links.

MLflow renders descriptions through showdown and a sanitizer that keeps ``<pre>`` and ``<a
href>`` but drops every ``style`` attribute, so markdown tables show without borders. The table
is therefore drawn with box characters inside ``<pre>``, where links still work; column widths
count the visible text, not the markup.

Everything is rendered from version tags, so descriptions can be regenerated from the registry
alone whenever links change (:mod:`fct_registry.registry.pages`). Links use the UI's hash routes
(``#/models/NAME/versions/N``) and read ``NAME/N``, the format of the ``fct.side_info`` tag.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fct_registry.registry import tags as fct_tags

MAX_DESCRIPTION = 5000  # MLflow's column width for model-version descriptions
COMPATIBILITY_PAGE = "fct/family/{family}"  # relative to the UI root: works behind a prefix
_SHORT = 12  # hex digits shown of a hash or commit


@dataclass(frozen=True)
class Linked:
    """A registered version as the descriptions see it."""

    name: str
    version: int
    tags: Mapping[str, str]


# --- cells: visible text plus the HTML that renders it -------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str  # what the reader sees (sets the column width)
    markup: str  # HTML with links


def plain(text: str) -> Cell:
    return Cell(text, html.escape(text, quote=False))


def link(name: str, version: int | str) -> Cell:
    ref = fct_tags.model_ref(name, version)
    return Cell(ref, f'<a href="#/models/{name}/versions/{version}">{html.escape(ref)}</a>')


def join(*cells: Cell | str, sep: str = "") -> Cell:
    parts = [plain(c) if isinstance(c, str) else c for c in cells]
    glue = plain(sep)
    return Cell(glue.text.join(p.text for p in parts), glue.markup.join(p.markup for p in parts))


def version_link(name: str, version: int | str) -> str:
    """A markdown link to a version's page (for text outside the table)."""
    return f"[{fct_tags.model_ref(name, version)}](#/models/{name}/versions/{version})"


def box_table(rows: Sequence[tuple[str, Cell | str]]) -> str:
    """A two-column table drawn with box characters in ``<pre>`` (see the module docstring):
    a border around it and between the columns, none between rows (compact)."""
    cells = [(plain(k), plain(v) if isinstance(v, str) else v) for k, v in rows]
    wk = max(len(k.text) for k, _ in cells)
    wv = max(len(v.text) for _, v in cells)
    out = [f"┌{'─' * (wk + 2)}┬{'─' * (wv + 2)}┐"]
    for k, v in cells:
        out.append(
            f"│ {k.markup}{' ' * (wk - len(k.text))} │ {v.markup}{' ' * (wv - len(v.text))} │"
        )
    out.append(f"└{'─' * (wk + 2)}┴{'─' * (wv + 2)}┘")
    return "<pre>\n" + "\n".join(out) + "\n</pre>"


# --- values --------------------------------------------------------------------------------------


def _num(tags: Mapping[str, str], key: str) -> str:
    value = tags.get(key)
    try:
        return f"{float(value):.1f}" if value not in (None, "", "nan") else "—"
    except ValueError:
        return "—"


def _scores(tags: Mapping[str, str]) -> str:
    return (
        f"top-1 {_num(tags, fct_tags.TOP1)} · top-5 {_num(tags, fct_tags.TOP5)} · mAP "
        f"{_num(tags, fct_tags.MAP)}"
    )


def _gap(tags: Mapping[str, str]) -> str:
    return (
        f"top-1 {_num(tags, fct_tags.GAP_CLOSED_TOP1)}% · mAP "
        f"{_num(tags, fct_tags.GAP_CLOSED_MAP)}%"
    )


def _classes(tags: Mapping[str, str]) -> str:
    try:
        classes = json.loads(tags.get(fct_tags.CLASSES, ""))
    except ValueError:
        return "all"
    if classes and classes == list(range(classes[0], classes[-1] + 1)):
        return f"{classes[0]}–{classes[-1]}"
    return ", ".join(map(str, classes)) or "all"


def origin(tags: Mapping[str, str]) -> str:
    """Where a version came from, in words: trained here, an external model (kind, original URI,
    sha256) or embedding tables."""
    raw = tags.get(fct_tags.GIVEN_SOURCE)
    if not raw:
        return "trained by the pipeline"
    try:
        source = json.loads(raw)
    except ValueError:
        return "given from outside"
    if "tables" in source:
        return "given as embedding tables"
    sha = str(source.get("sha256", "?"))[:_SHORT]
    return f"external {source.get('kind', '?')} model {source.get('uri', '?')} (sha256 {sha})"


def _provenance(tags: Mapping[str, str]) -> list[tuple[str, Cell | str]]:
    rows: list[tuple[str, Cell | str]] = [("origin", origin(tags))]
    if fct_tags.PREPROCESS in tags:
        rows.append(("preprocessing", tags[fct_tags.PREPROCESS]))
    if fct_tags.PIPELINE_KEY in tags:
        rows.append(("params.yaml key", tags[fct_tags.PIPELINE_KEY]))
    if fct_tags.DATASET in tags:
        rows.append(
            (
                "training data",
                f"{tags[fct_tags.DATASET]}, split sha256 "
                f"{tags.get(fct_tags.DATA_SHA256, '?')[:_SHORT]}",
            )
        )
    rows.append(("git commit", tags.get(fct_tags.GIT_COMMIT, "unknown")[:_SHORT]))
    if fct_tags.CONTENT_HASH in tags:
        rows.append(("content hash", tags[fct_tags.CONTENT_HASH][:_SHORT]))
    if fct_tags.ONNX_MAX_ABS_DIFF in tags:
        rows.append(("ONNX vs PyTorch", f"max abs diff {tags[fct_tags.ONNX_MAX_ABS_DIFF]}"))
    return rows


def _gate_rows(tags: Mapping[str, str], aliases: Sequence[str]) -> list[tuple[str, Cell | str]]:
    rows: list[tuple[str, Cell | str]] = []
    if fct_tags.PRODUCTION_ALIAS in aliases:
        rows.append(("release", f"@{fct_tags.PRODUCTION_ALIAS} (serving)"))
    if fct_tags.GATE_VERDICT in tags:
        rows.append(("release gate", _gate_text(tags)))
        if fct_tags.GATE_RUN in tags and tags.get(
            fct_tags.FAMILY
        ):  # recorded by a gate that keeps a history
            page = COMPATIBILITY_PAGE.format(family=tags[fct_tags.FAMILY]) + "#gate-history"
            text = "every recorded verdict, newest first"
            rows.append(("gate history", Cell(text, f'<a href="{html.escape(page)}">{text}</a>')))
    return rows


def gate_summary(tags: Mapping[str, str]) -> dict[str, object] | None:
    """The gate's verdict on a version, from its ``fct.gate.*`` tags (None when never gated):
    verdict, baseline version, rules passed / failed, and when."""
    if fct_tags.GATE_VERDICT not in tags:
        return None
    try:
        report = json.loads(tags.get(fct_tags.GATE_REPORT, "{}"))
    except ValueError:
        report = {}
    checks = report.get("checks") or {}
    statuses = [c.get("status") for c in checks.values() if isinstance(c, dict)]
    return {
        "verdict": tags[fct_tags.GATE_VERDICT],
        "baseline": report.get("baseline"),
        "passed": statuses.count("pass"),
        "failed": statuses.count("fail"),
        "at": report.get("at"),
    }


def _gate_text(tags: Mapping[str, str]) -> str:
    gate = gate_summary(tags) or {}
    text = str(gate.get("verdict", "?")).upper()
    if gate.get("baseline") is not None:
        text += f" against @{gate['baseline']}"
    text += f": {gate.get('passed', 0)} rules passed, {gate.get('failed', 0)} failed"
    return text + (f" ({gate['at']})" if gate.get("at") else "")


_IMAGES = '{"images": float32 [N, C, H, W] in [0, 1]}'
"""The pyfunc input of an image model (embedding or side-info)."""


def _usage(verb: str, model: str, inputs: str, note: str = "") -> str:
    """How to run the model: load ``models:/<model>`` as a pyfunc and predict ``inputs``."""
    return f'{verb}: `mlflow.pyfunc.load_model("models:/{model}").predict({inputs})`{note}.'


def _page(family: str, headline: str, rows: list[tuple[str, Cell | str]], usage: str) -> str:
    """A description: the headline, the table of ``rows``, how to use the model, and a link to
    the family's compatibility page; fitted to MLflow's length limit."""
    page = COMPATIBILITY_PAGE.format(family=family)
    lines = [
        headline,
        "",
        box_table(rows),
        "",
        usage,
        "",
        f"Compatibility graph, every measured pair and the gate history of `{family}`: "
        f"[compatibility page]({page}) (`mlflow server --app-name fct`, or `fct-auth` with "
        "a password).",
    ]
    return fit("\n".join(lines))


def _hop_rows(linked: Sequence[Linked]) -> list[Cell]:
    cells = []
    for t in linked:
        ends = f"@{t.tags.get(fct_tags.SOURCE, '?')} → @{t.tags.get(fct_tags.TARGET, '?')}"
        what = (
            "chain"
            if t.tags.get(fct_tags.ROLE) == fct_tags.ROLE_CHAIN
            else t.tags.get(fct_tags.KIND, "fct")
        )
        cells.append(
            join(link(t.name, t.version), f" {ends} {what}, top-1 {_num(t.tags, fct_tags.TOP1)}")
        )
    return cells


# --- the three pages -----------------------------------------------------------------------------


def embedding_description(
    family: str,
    version: int,
    tags: Mapping[str, str],
    *,
    into: Sequence[Linked],
    out_of: Sequence[Linked],
    aliases: Sequence[str] = (),
) -> str:
    """``into``/``out_of``: transformations and chains ending / starting at this version."""
    side = tags.get(fct_tags.SIDE_INFO)
    rows: list[tuple[str, Cell | str]] = [
        ("embeds", f"float images in [0, 1] → {tags.get(fct_tags.EMBEDDING_DIM, '?')}-d vectors"),
        ("trained on classes", _classes(tags)),
        ("side-info extractor", link(*fct_tags.parse_model_ref(side)) if side else "none"),
        ("own gallery", _scores(tags)),
    ]
    for label, linked in (("upgraded from", into), ("upgrades to", out_of)):
        for i, cell in enumerate(_hop_rows(linked)):
            rows.append((label if i == 0 else "", cell))
    if not into and not out_of:
        rows.append(("transformations", "none registered yet"))
    rows += _gate_rows(tags, aliases) + _provenance(tags)
    headline = (
        f"{family}@{version}: embedding model of the {family} family (Forward Compatible "
        "Training registry). Galleries of older versions are upgraded to it by the "
        "transformations below, reading the side-info stored with each item."
    )
    return _page(family, headline, rows, _usage("Embed", f"{family}/{version}", _IMAGES))


def transformation_description(
    family: str,
    version: int,
    tags: Mapping[str, str],
    *,
    aliases: Sequence[str] = (),
) -> str:
    """A transformation, or a chain (``fct.role=chain``, hops in ``fct.hops``)."""
    source, target = tags.get(fct_tags.SOURCE, "?"), tags.get(fct_tags.TARGET, "?")
    side = tags.get(fct_tags.SIDE_INFO)
    chain = tags.get(fct_tags.ROLE) == fct_tags.ROLE_CHAIN
    name = fct_tags.transformations_model_name(family)
    hops = [h for h in tags.get(fct_tags.HOPS, "").split(",") if h.strip()]
    rows: list[tuple[str, Cell | str]] = [
        ("upgrades", join(link(family, source), " → ", link(family, target))),
    ]
    if chain:
        rows.append(("hops, in order", join(*(link(name, h) for h in hops), sep=" then ")))
    else:
        rows.append(("kind", tags.get(fct_tags.KIND, "?")))
    rows += [
        (
            "side-info",
            link(*fct_tags.parse_model_ref(side)) if side else "none (reads no side-info)",
        ),
        ("new queries vs upgraded old gallery", _scores(tags)),
        ("old→new gap closed", _gap(tags)),
    ]
    rows += _gate_rows(tags, aliases) + _provenance(tags)
    what = (
        f"chain of {len(hops)} transformations, measured end to end"
        if chain
        else f"FCT transformation ({tags.get(fct_tags.KIND, '?')})"
    )
    headline = (
        f"{family}@{source} → {family}@{target}: {what}. Upgrades a stored gallery without "
        "re-embedding its images: h(old embedding, side-info) → new embedding."
    )
    inputs = '{"old_embedding": ..., "side_info": ...}'
    note = " (float32 arrays, one row per item)"
    return _page(family, headline, rows, _usage("Upgrade", f"{name}/{version}", inputs, note))


def side_info_description(
    family: str,
    version: int,
    tags: Mapping[str, str],
    *,
    readers: Sequence[Linked],
) -> str:
    rows: list[tuple[str, Cell | str]] = [
        (
            "computes",
            f"{tags.get(fct_tags.EMBEDDING_DIM, '?')}-d side-info from float images in [0, 1]",
        ),
    ]
    trained_with = tags.get(fct_tags.TRAINED_WITH)
    if trained_with and trained_with != "all":
        rows.append(
            (
                "trained on",
                f"params version `{trained_with}`'s training images only (ships with it)",
            )
        )
    for i, cell in enumerate(_hop_rows(readers)):
        rows.append(("read by" if i == 0 else "", cell))
    if not readers:
        rows.append(("read by", "no transformation yet"))
    rows += _provenance(tags)
    name = fct_tags.side_info_model_name(family)
    headline = (
        f"{name}/{version}: side-info extractor of the {family} family (self-supervised). "
        "Its vector is stored beside every gallery item, once, and never changes: FCT "
        "transformations read it to upgrade old embeddings."
    )
    return _page(family, headline, rows, _usage("Compute", f"{name}/{version}", _IMAGES))


def fit(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """Keep under MLflow's limit (a family with very many transformations): cut the table's
    middle rows rather than break its markup."""
    if len(text) <= limit:
        return text
    head, _, rest = text.partition("<pre>\n")
    table, _, tail = rest.partition("\n</pre>")
    lines = table.splitlines()  # top border, rows, bottom border
    note = "\n(table shortened: see the compatibility page)"
    while len(lines) > 3 and len(head) + len("\n".join(lines)) + len(tail) + 80 > limit:
        del lines[len(lines) // 2]  # a middle row: the links, not the head or provenance
    return head + "<pre>\n" + "\n".join(lines) + "\n</pre>" + tail + note

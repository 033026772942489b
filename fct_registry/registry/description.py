"""Markdown descriptions of registered versions, so the MLflow UI tells the story on its own.

Everything is rendered from version tags (plus the pipeline's compatibility table), so a
description can be regenerated from the registry alone whenever links change. Links use the
UI's hash routes (``#/models/NAME/versions/N``) and read ``NAME/N``, the format of the
``fct.side_info`` tag.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fct_registry.registry import tags as T

MAX_DESCRIPTION = 5000  # MLflow's column width for model-version descriptions


@dataclass(frozen=True)
class Linked:
    """A registered version as the descriptions see it."""

    name: str
    version: int
    tags: Mapping[str, str]


def version_link(name: str, version: int | str) -> str:
    return f"[{T.model_ref(name, version)}](#/models/{name}/versions/{version})"


def _num(tags: Mapping[str, str], key: str) -> str:
    value = tags.get(key)
    try:
        return f"{float(value):.1f}" if value not in (None, "", "nan") else "—"
    except ValueError:
        return "—"


def _provenance(tags: Mapping[str, str]) -> list[str]:
    params = tags.get(T.PARAMS)
    rows = [
        "| trained from | |",
        "|---|---|",
        f"| params.yaml key | `{tags.get(T.PIPELINE_KEY, '?')}` |",
        f"| dataset | `{tags.get(T.DATASET, '?')}`, training split sha256 "
        f"`{tags.get(T.DATA_SHA256, '?')[:12]}` |",
        f"| git commit | `{tags.get(T.GIT_COMMIT, 'unknown')[:12]}` |",
        f"| content hash | `{tags.get(T.CONTENT_HASH, '?')[:12]}` |",
        f"| ONNX vs PyTorch | max abs diff {tags.get(T.ONNX_MAX_ABS_DIFF, '?')} |",
    ]
    if params:
        rows.append(f"| params | `{_compact(params)}` |")
    return rows


def _compact(params_json: str, limit: int = 600) -> str:
    try:
        text = json.dumps(json.loads(params_json), sort_keys=True, separators=(", ", ": "))
    except ValueError:
        text = params_json
    text = text.replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(compatibility: str | None, key_map: Mapping[str, int] | None, family: str) -> list[str]:
    if not compatibility:
        return []
    lines = ["", "### Compatibility (test split, percent)", "", compatibility.strip(), ""]
    if key_map:
        identity = all(str(k) == str(v) for k, v in key_map.items())
        mapping = ", ".join(f"`{k}` → {family}/{v}" for k, v in key_map.items())
        lines.append(
            "Versions in the table are params.yaml keys"
            + (" and equal the registry's versions." if identity else f"; registered as {mapping}.")
        )
    return lines


def _transformation_rows(family: str, label: str, versions: Sequence[Linked]) -> list[str]:
    rows = []
    for t in versions:
        ends = f"{family}@{t.tags.get(T.SOURCE, '?')} → {family}@{t.tags.get(T.TARGET, '?')}"
        rows.append(
            f"| {label} | {version_link(t.name, t.version)} | {ends} | "
            f"{t.tags.get(T.KIND, '?')} | {_num(t.tags, T.TOP1)} | "
            f"{_num(t.tags, T.GAP_CLOSED_TOP1)} |"
        )
    return rows


def embedding_description(
    family: str,
    version: int,
    tags: Mapping[str, str],
    *,
    into: Sequence[Linked],
    out_of: Sequence[Linked],
    compatibility: str | None = None,
    key_map: Mapping[str, int] | None = None,
) -> str:
    side = tags.get(T.SIDE_INFO)
    side_link = version_link(*T.parse_model_ref(side)) if side else "—"
    lines = [
        f"**{family}@{version}** — embedding model of the `{family}` family "
        "(Forward Compatible Training registry).",
        "",
        f"Embeds float images in [0, 1] into {tags.get(T.EMBEDDING_DIM, '?')}-d vectors; trained "
        f"on classes {tags.get(T.CLASSES, 'all')}. Galleries of older versions are upgraded to "
        "this one by the transformations below, reading the side-info stored with each item.",
        "",
        "| link | |",
        "|---|---|",
        f"| side-info extractor | {side_link} |",
        f"| retrieval on its own gallery | top-1 {_num(tags, T.TOP1)} · top-5 "
        f"{_num(tags, T.TOP5)} · mAP {_num(tags, T.MAP)} |",
        "",
        "### Transformations",
        "",
    ]
    if into or out_of:
        lines += [
            "| | version | upgrades | kind | top-1 | top-1 gap closed |",
            "|---|---|---|---|---:|---:|",
        ]
        lines += _transformation_rows(family, "into", into)
        lines += _transformation_rows(family, "out of", out_of)
    else:
        lines.append("None registered yet.")
    lines += ["", *_provenance(tags), *_table(compatibility, key_map, family)]
    return fit("\n".join(lines))


def transformation_description(
    family: str,
    version: int,
    tags: Mapping[str, str],
    *,
    compatibility: str | None = None,
    key_map: Mapping[str, int] | None = None,
) -> str:
    source, target = tags.get(T.SOURCE, "?"), tags.get(T.TARGET, "?")
    side = tags.get(T.SIDE_INFO)
    role = "chain of transformations" if tags.get(T.ROLE) == T.ROLE_CHAIN else "transformation"
    lines = [
        f"**{family}@{source} → {family}@{target}** — FCT {role} "
        f"(`{tags.get(T.KIND, '?')}`), version {version}.",
        "",
        "Upgrades a stored gallery without re-embedding images: "
        "`h(old_embedding, side_info) -> new_embedding`. Load it with "
        '`mlflow.pyfunc.load_model(uri).predict({"old_embedding": ..., "side_info": ...})`.',
        "",
        "| link | |",
        "|---|---|",
        f"| reads (old) | {version_link(family, source)} |",
        f"| produces (new) | {version_link(family, target)} |",
        f"| side-info extractor | {version_link(*T.parse_model_ref(side)) if side else 'none'} |",
        f"| new queries vs upgraded gallery | top-1 {_num(tags, T.TOP1)} · top-5 "
        f"{_num(tags, T.TOP5)} · mAP {_num(tags, T.MAP)} |",
        f"| share of the old→new gap closed | top-1 {_num(tags, T.GAP_CLOSED_TOP1)} · mAP "
        f"{_num(tags, T.GAP_CLOSED_MAP)} |",
    ]
    if tags.get(T.HOPS):
        lines.append(f"| hops | {tags[T.HOPS]} |")
    lines += ["", *_provenance(tags), *_table(compatibility, key_map, family)]
    return fit("\n".join(lines))


def side_info_description(
    family: str,
    version: int,
    tags: Mapping[str, str],
    *,
    readers: Sequence[Linked],
    compatibility: str | None = None,
    key_map: Mapping[str, int] | None = None,
) -> str:
    lines = [
        f"**{T.side_info_model_name(family)}/{version}** — side-info extractor of the "
        f"`{family}` family (self-supervised, {tags.get(T.EMBEDDING_DIM, '?')}-d).",
        "",
        "Its vector is stored beside every gallery item, once, and never changes: FCT "
        "transformations read it to upgrade old embeddings.",
        "",
    ]
    trained_with = tags.get(T.TRAINED_WITH)
    if trained_with and trained_with != "all":
        lines += [
            f"Trained only on the training images of params version `{trained_with}` "
            "(`side_info.trained_with`): it ships with that version.",
            "",
        ]
    if readers:
        lines += ["| read by | upgrades |", "|---|---|"]
        for t in readers:
            lines.append(
                f"| {version_link(t.name, t.version)} | {family}@{t.tags.get(T.SOURCE)}"
                f" → {family}@{t.tags.get(T.TARGET)} |"
            )
        lines.append("")
    lines += [*_provenance(tags), *_table(compatibility, key_map, family)]
    return fit("\n".join(lines))


def fit(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """Keep under MLflow's limit: drop the compatibility table first, then cut."""
    if len(text) <= limit:
        return text
    head, sep, _ = text.partition("\n### Compatibility")
    if sep:
        text = head + "\n\n(compatibility table omitted for length: see the run's artifact "
        text += "`eval/compatibility.md`)"
    return text if len(text) <= limit else text[: limit - 1] + "…"

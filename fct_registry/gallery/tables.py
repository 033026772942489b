"""Write a gallery from embedding tables: the index of a family given as embeddings.

A family whose versions were given as tables (no model to run; see
:mod:`fct_registry.data.embedding_tables`) indexes its items with the encoder that produced the
tables, outside this project. :func:`gallery_from_tables` stores those vectors as a gallery of a
registered version, beside the side-info vectors of the same items, after checking what an
upgrade would otherwise get wrong silently: the two tables hold the same ids, the widths are the
registered ones, and the side-info comes from the extractor the version links to (on the ids it
shares with that extractor's registered tables, its vectors must be the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fct_registry.data.embedding_tables import EmbeddingTable, order_of, read_table
from fct_registry.errors import DataError
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.indexed_with import models_for
from fct_registry.gallery.manifest import Manifest
from fct_registry.gallery.writer import DEFAULT_SHARD_ROWS, GalleryWriter
from fct_registry.registry import tags as fct_tags
from fct_registry.storage import open_storage

BATCH_ROWS = 65_536


def _registered(client: Any, name: str, version: int | str) -> dict[str, str]:
    return dict(client.get_model_version(name, str(version)).tags or {})


def check_same_extractor(table: EmbeddingTable, side_tags: dict[str, str], side_ref: str) -> None:
    """Refuse a side-info table that disagrees with the linked extractor's registered tables on
    the ids they share (another extractor, or the same one on other inputs)."""
    dim = side_tags.get(fct_tags.EMBEDDING_DIM)
    if dim is not None and table.dim != int(dim):
        raise DataError(
            f"side-info table {table.uri} has {table.dim}-d vectors but {side_ref} is {dim}-d: "
            f"it comes from another extractor; pass the side-info that {side_ref} gives"
        )
    lineage = json.loads(side_tags.get(fct_tags.GIVEN_SOURCE) or "{}")
    for split, record in sorted(lineage.get("tables", {}).items()):
        if record.get("sha256") == table.sha256:
            return  # the very table the extractor was registered with
        if not Path(record.get("uri", "")).is_file():
            continue  # not reachable from here: the width check above is what we can do
        known = read_table(record["uri"], f"{side_ref} ({split})")
        shared = np.intersect1d(known.ids.astype(str), table.ids.astype(str))
        if not len(shared):
            continue
        ours = table.vectors[order_of_subset(table, shared)]
        theirs = known.vectors[order_of_subset(known, shared)]
        differ = ~np.isclose(ours, theirs, rtol=1e-4, atol=1e-5).all(axis=1)
        if differ.any():
            raise DataError(
                f"side-info table {table.uri} differs from {side_ref}'s registered {split} "
                f"table on {int(differ.sum())} of {len(shared)} shared ids: it comes from "
                f"another extractor; pass the side-info that {side_ref} gives"
            )


def order_of_subset(table: EmbeddingTable, ids: np.ndarray) -> np.ndarray:
    position = {str(i): n for n, i in enumerate(table.ids)}
    return np.asarray([position[str(i)] for i in ids], dtype=np.int64)


def gallery_from_tables(
    client: Any,
    ref: Any,
    embeddings: str | Path,
    side_info: str | Path | None,
    out: str | Path,
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> Manifest:
    """Write the gallery of version ``ref`` (a :class:`~fct_registry.registry.refs.VersionRef`)
    at ``out`` from its embedding table and the side-info table of the same items (``None``: a
    gallery without side-info, upgradable only by chains without it). Labels are kept when the
    embedding table has them. Nothing is written when a check fails."""
    found = models_for(client, ref)
    version_tags = _registered(client, found.family, found.version)
    table = read_table(embeddings, "the embedding table")
    dim = version_tags.get(fct_tags.EMBEDDING_DIM)
    if dim is not None and table.dim != int(dim):
        raise DataError(
            f"the embedding table {table.uri} has {table.dim}-d vectors but "
            f"{found.family}@{found.version} is {dim}-d; pass that version's table"
        )
    side_vectors = None
    if side_info is not None:
        if found.side_info_ref is None:
            raise DataError(
                f"{found.family}@{found.version} links no side-info extractor; drop the "
                "side-info table"
            )
        side = read_table(side_info, "the side-info table")
        name, side_version = fct_tags.parse_model_ref(found.side_info_ref)
        check_same_extractor(side, _registered(client, name, side_version), found.side_info_ref)
        side_vectors = side.vectors[order_of(side, table.ids, side.uri, table.uri)]
    writer = GalleryWriter(open_storage(out), found.family, shard_rows=shard_rows)
    for lo in range(0, len(table.ids), BATCH_ROWS):
        rows = slice(lo, lo + BATCH_ROWS)
        writer.write(
            gallery_schema.make_batch(
                table.ids[rows].tolist(),
                table.vectors[rows],
                model_version=found.version,
                side_info=None if side_vectors is None else side_vectors[rows],
                side_info_version=None if side_vectors is None else found.side_info_ref,
                labels=None if table.labels is None else table.labels[rows],
            )
        )
    return writer.close()

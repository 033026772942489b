"""Embedding tables: a model given as its vectors, for families with no images and no models.

A table holds one row per item: ``id``, ``vector`` and optionally ``label`` (needed only to score
retrieval: evaluation and the gate). Two formats:

* Parquet (``.parquet``/``.pq``): ``id`` string or integer, ``vector`` a list or fixed-size list
  of floats, ``label`` integer;
* safetensors (``.safetensors``): tensors ``vector`` ``[N, d]`` float, ``id`` ``[N]`` integer,
  ``label`` ``[N]`` integer (safetensors holds no strings).

Every version and the side-info extractor of such a family give one table per split. The
prepare stage (:func:`prepare_tables`) reads all of them once, refuses what would make a
transformation learn from misaligned rows (ids that differ between tables, duplicate ids,
non-finite values, ragged or wrong widths, different row counts, labels that disagree), and
writes the split's row order (the ids), its labels and the tables' sha256. Each version's stage
then imports its own table in that order (:func:`import_table`), refusing a table that changed
since, so every stored embedding file holds the same items in the same rows, as image families'
do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from safetensors.numpy import load_file, save_file

from fct_registry.config import EmbeddingTablesConfig
from fct_registry.errors import DataError

DATASET = "embeddings"  # info.json's ``dataset`` for a family given as tables
SPLITS = ("train", "test")
PARQUET_SUFFIXES = (".parquet", ".pq")
SAFETENSORS_SUFFIXES = (".safetensors",)
FIX_SPLIT = "give every table of a split the same items, one row each"


@dataclass(frozen=True)
class EmbeddingTable:
    """One table, read and checked: ids as strings, vectors ``float32 [N, d]``."""

    uri: str
    ids: np.ndarray  # str objects [N]
    vectors: np.ndarray  # float32 [N, d]
    labels: np.ndarray | None  # int64 [N]
    sha256: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def record(self) -> dict:
        """What a registered version records of its table (lineage)."""
        return {"uri": self.uri, "sha256": self.sha256, "rows": len(self.ids), "dim": self.dim}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _examples(values: np.ndarray | list, limit: int = 3) -> str:
    shown = ", ".join(repr(str(v)) for v in list(values)[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _read_parquet(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(
            f"{where}: cannot read {path} as Parquet ({exc}); write it with pyarrow"
        ) from None
    missing = [c for c in ("id", "vector") if c not in table.column_names]
    if missing:
        raise DataError(
            f"{where}: {path} has no column {', '.join(missing)} (it has "
            f"{', '.join(table.column_names)}); give columns id, vector and optionally label"
        )
    ids_col = table.column("id")
    if ids_col.null_count:
        raise DataError(f"{where}: {path} has {ids_col.null_count} null ids; give every row an id")
    ids = np.asarray(ids_col.cast(pa.string()).to_pylist(), dtype=object)
    column = table.column("vector").combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)):
        raise DataError(
            f"{where}: {path} column vector is {column.type}, not a list of floats; store one "
            "list of floats per row"
        )
    if column.null_count:
        raise DataError(f"{where}: {path} has {column.null_count} rows without a vector")
    lengths = np.asarray(pc.list_value_length(column))
    if len(lengths) and lengths.min() != lengths.max():
        bad = ids[lengths != np.bincount(lengths).argmax()]
        raise DataError(
            f"{where}: {path} has vectors of different widths ({lengths.min()} to "
            f"{lengths.max()}; e.g. ids {_examples(bad)}); give every row a vector of the same "
            "width"
        )
    width = int(lengths[0]) if len(lengths) else 0
    flat = np.asarray(pc.list_flatten(column).cast(pa.float32()), dtype=np.float32)
    vectors = flat.reshape(len(ids), width)
    labels = None
    if "label" in table.column_names:
        label_col = table.column("label")
        if label_col.null_count or not pa.types.is_integer(label_col.type):
            raise DataError(
                f"{where}: {path} column label must be integers without nulls (it is "
                f"{label_col.type}, {label_col.null_count} nulls); map class names to 0..K-1"
            )
        labels = np.asarray(label_col.to_numpy(), dtype=np.int64)
    return ids, vectors, labels


def _read_safetensors(path: Path, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise DataError(f"{where}: cannot read {path} as safetensors ({exc})") from None
    missing = [c for c in ("id", "vector") if c not in tensors]
    if missing:
        raise DataError(
            f"{where}: {path} has no tensor {', '.join(missing)} (it has "
            f"{', '.join(sorted(tensors))}); give tensors id [N] (integers), vector [N, d] and "
            "optionally label [N]"
        )
    vectors, ids = tensors["vector"], tensors["id"]
    if vectors.ndim != 2:
        raise DataError(f"{where}: {path} tensor vector has shape {vectors.shape}; give [N, d]")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(
            f"{where}: {path} tensor id must be 1-D integers (got {ids.dtype} {ids.shape}); "
            "use Parquet for string ids"
        )
    labels = tensors.get("label")  # optional by definition of the format
    if labels is not None and (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{where}: {path} tensor label must be 1-D integers [N]")
    for name, arr in (("id", ids), ("label", labels)):
        if arr is not None and len(arr) != len(vectors):
            raise DataError(
                f"{where}: {path} has {len(vectors)} vectors but {len(arr)} {name}s; give "
                "one per row"
            )
    return (
        np.asarray([str(int(i)) for i in ids], dtype=object),
        np.ascontiguousarray(vectors, dtype=np.float32),
        None if labels is None else labels.astype(np.int64),
    )


def read_table(path: str | Path, where: str) -> EmbeddingTable:
    """Read and check one table; ``where`` names it in errors (e.g. ``versions.2.train``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{where}: {path} not found; give the path of a Parquet or safetensors table"
        )
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        ids, vectors, labels = _read_parquet(path, where)
    elif suffix in SAFETENSORS_SUFFIXES:
        ids, vectors, labels = _read_safetensors(path, where)
    else:
        raise DataError(
            f"{where}: {path} is neither Parquet ({', '.join(PARQUET_SUFFIXES)}) nor "
            f"safetensors ({', '.join(SAFETENSORS_SUFFIXES)}); convert it to one of them"
        )
    if not len(ids):
        raise DataError(f"{where}: {path} has no rows; give at least one item")
    unique, counts = np.unique(ids.astype(str), return_counts=True)
    if len(unique) != len(ids):
        raise DataError(
            f"{where}: {path} has duplicate ids ({_examples(unique[counts > 1])}); give every "
            "item one row"
        )
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise DataError(
            f"{where}: {path} has NaN or infinite values in {int((~finite).sum())} rows (e.g. "
            f"ids {_examples(ids[~finite])}); fix or drop those rows in every table"
        )
    if labels is not None and len(labels) and labels.min() < 0:
        raise DataError(f"{where}: {path} has negative labels; use class ids 0..K-1")
    return EmbeddingTable(str(path), ids, vectors, labels, sha256_of(path))


def check_width(table: EmbeddingTable, dim: int, where: str, field: str) -> None:
    if table.dim != dim:
        raise DataError(
            f"{where}: {table.uri} has {table.dim}-d vectors but {field} is {dim}; set "
            f"{field}: {table.dim} or give the table of that model"
        )


def order_of(table: EmbeddingTable, ids: np.ndarray, where: str, reference: str) -> np.ndarray:
    """Row indices putting ``table`` in the order of ``ids`` (the reference table's); refuses
    tables of other items."""
    if len(table.ids) != len(ids):
        raise DataError(
            f"{where}: {table.uri} has {len(table.ids)} rows but {reference} has {len(ids)}; "
            f"{FIX_SPLIT}"
        )
    position = {str(i): n for n, i in enumerate(table.ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        extra = sorted(set(position) - set(map(str, ids)))
        raise DataError(
            f"{where}: {table.uri} and {reference} list different ids ({len(missing)} of "
            f"{reference}'s are missing, e.g. {_examples(missing)}; {len(extra)} others, e.g. "
            f"{_examples(extra)}); {FIX_SPLIT}"
        )
    return np.asarray([position[i] for i in ids], dtype=np.int64)


def _ids_sha256(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def prepare_tables(
    tables: Mapping[str, EmbeddingTablesConfig],
    widths: Mapping[str, tuple[str, int]],
    out_dir: Path,
) -> dict:
    """The prepare stage of a family given as tables: check every table, write the row order.

    ``tables`` maps where each is configured (``side_info``, ``versions.2``; the first is the
    reference order) to its config; ``widths`` maps the same keys to ``(field, width)`` declared
    in params. Writes ``info.json`` (classes, sizes, the tables' sha256), ``ids-<split>.json``
    and ``<split>.safetensors`` (``labels`` when the tables have them) into ``out_dir`` through a
    temporary folder: a refused table leaves nothing behind.
    """
    info: dict = {"dataset": DATASET, "classes": []}
    written: dict[str, dict] = {}
    for split in SPLITS:
        reference = ref_ids = None
        labels: np.ndarray | None = None
        labels_from = ""
        records = {}
        for where, cfg in tables.items():
            name = f"{where}.source.embeddings.{split}"
            table = read_table(getattr(cfg, split), name)
            field, width = widths[where]
            check_width(table, width, name, f"{where}.{field}")
            if ref_ids is None:
                reference, ref_ids, order = name, table.ids.astype(str), None
            else:
                order = order_of(table, ref_ids, name, reference)
            if table.labels is not None:
                aligned = table.labels if order is None else table.labels[order]
                if labels is None:
                    labels, labels_from = aligned, name
                elif not np.array_equal(labels, aligned):
                    differ = ref_ids[labels != aligned]
                    raise DataError(
                        f"{name}: labels disagree with {labels_from} on {len(differ)} ids (e.g. "
                        f"{_examples(differ)}); give the same label to an item in every table"
                    )
            records[where] = table.record()
        written[split] = {"ids": ref_ids.tolist(), "labels": labels}
        info[split] = {
            "size": len(ref_ids),
            "ids_sha256": _ids_sha256(ref_ids),
            "labelled": labels is not None,
            "tables": records,
        }
    train_labels, test_labels = (written[s]["labels"] for s in SPLITS)
    if (train_labels is None) != (test_labels is None):
        raise DataError(
            "the train tables have labels and the test tables do not (or the reverse); give a "
            "label column in both splits or in neither"
        )
    if train_labels is not None:
        classes = int(max(train_labels.max(), test_labels.max())) + 1
        info["classes"] = [str(c) for c in range(classes)]
        for split in SPLITS:
            info[split]["per_class"] = np.bincount(
                written[split]["labels"], minlength=classes
            ).tolist()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split in SPLITS:
        labels = written[split]["labels"]
        tensors = {} if labels is None else {"labels": labels}
        # The prepared split's images are empty [N, 0, 0, 0]: stages that need pixels are
        # refused in config; those that read labels find them where image families keep them.
        tensors["images"] = np.zeros((info[split]["size"], 0, 0, 0), np.uint8)
        save_file(tensors, str(tmp / f"{split}.safetensors"))
        (tmp / f"ids-{split}.json").write_text(json.dumps(written[split]["ids"]))
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info


def prepared_ids(data_dir: Path, split: str) -> np.ndarray:
    path = Path(data_dir) / f"ids-{split}.json"
    if not path.is_file():
        raise DataError(
            f"{path} not found; run the prepare stage first (`dvc repro prepare`), which reads "
            "the embedding tables"
        )
    return np.asarray(json.loads(path.read_text()), dtype=object)


def import_table(
    cfg: EmbeddingTablesConfig, data_dir: Path, where: str, field: str, width: int
) -> tuple[dict[str, np.ndarray], dict]:
    """``({split: float32 [N, d]} in the prepared row order, lineage record)`` of one model's
    tables; refuses tables that changed since the prepare stage read them."""
    info_path = Path(data_dir) / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("dataset") != DATASET:
        raise DataError(
            f"{data_dir} was not prepared from embedding tables; rerun the prepare stage "
            "(`dvc repro prepare`)"
        )
    vectors, record = {}, {"kind": "embeddings", "dim": width, "tables": {}}
    for split in SPLITS:
        name = f"{where}.source.embeddings.{split}"
        table = read_table(getattr(cfg, split), name)
        prepared = info[split]["tables"].get(where, {})
        if prepared.get("sha256") != table.sha256:
            raise DataError(
                f"{name}: {table.uri} changed since the prepare stage read it; rerun the "
                "prepare stage (`dvc repro prepare`)"
            )
        check_width(table, width, name, f"{where}.{field}")
        ids = prepared_ids(data_dir, split)
        order = order_of(table, ids, name, f"the prepared {split} split")
        vectors[split] = np.ascontiguousarray(table.vectors[order])
        record["tables"][split] = table.record()
    return vectors, record

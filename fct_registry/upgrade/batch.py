"""The engine-independent step of an upgrade: one Arrow batch of a gallery in, upgraded out.

:func:`upgrade_batch` knows nothing of files, shards or processes, so the local streaming job and
distributed engines (Ray Data's ``map_batches``) run exactly the same code. Rows are routed by
``(model_version, side_info_version)`` to the chain resolved for that pair; rows already at the
target pass through. Everything is checked before a number is computed (widths, NaN/inf,
side-info presence and extractor), and a failure names the row and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import SchemaError, SideInfoError
from fct_registry.gallery.manifest import GroupKey
from fct_registry.upgrade.runner import ChainRunner


@dataclass(frozen=True)
class GroupRunner:
    """How rows of one group (``GroupKey``: family version, side-info extractor) reach the target:
    the runner of the route the resolver chose, or ``None`` when they are already there."""

    runner: ChainRunner | None
    label: str  # e.g. "fashion@1 -> fashion@3 via fashion-transformations/4" (for messages)

    @property
    def old_dim(self) -> int | None:
        return None if self.runner is None else self.runner.old_dim

    @property
    def side_info_dim(self) -> int:
        return 0 if self.runner is None else self.runner.side_info_dim


@dataclass(frozen=True)
class UpgradeTarget:
    """What an upgrade writes: rows of ``family@target``, ``target_dim`` wide. The plan that
    records and fingerprints it (:class:`~.plan.UpgradePlan`) and the one that runs it
    (:class:`BatchPlan`) both start with it."""

    family: str
    target: int
    target_dim: int


@dataclass(frozen=True)
class BatchPlan(UpgradeTarget):
    """Everything :func:`upgrade_batch` needs; picklable when its runners are."""

    routes: Mapping[GroupKey, GroupRunner]

    @property
    def uncertainty(self) -> bool:
        """Some route's chain predicts a per-row uncertainty (written as a column)."""
        return any(getattr(r.runner, "predicts_uncertainty", False) for r in self.routes.values())

    def known(self) -> str:
        return (
            ", ".join(
                _key_label(self.family, k)
                for k in sorted(self.routes, key=lambda k: (k[0], k[1] or ""))
            )
            or "none"
        )


def output_schema(schema: pa.Schema, target_dim: int, uncertainty: bool = False) -> pa.Schema:
    """``schema`` with the embedding widened/narrowed to the target's width; all else kept.
    ``uncertainty``: add the ``uncertainty`` column (kept when the source has one anyway)."""
    i = schema.get_field_index(gallery_schema.EMBEDDING)
    field = pa.field(
        gallery_schema.EMBEDDING, gallery_schema.vector_type(target_dim), nullable=False
    )
    out = schema.set(i, field).remove_metadata()
    if uncertainty and gallery_schema.UNCERTAINTY not in out.names:
        out = out.append(gallery_schema.uncertainty_field())
    return out


def upgrade_batch(batch: pa.RecordBatch, plan: BatchPlan, where: str = "batch") -> pa.RecordBatch:
    """Upgrade every row of ``batch`` to ``plan.target``; other columns are carried through.

    Raises a :class:`~fct_registry.gallery.errors.GalleryError` subclass (nothing is returned)
    for a missing column, wrong widths, NaN/inf, side-info that is missing or from another
    extractor than the route's chain reads, or a version the plan has no route for.
    """
    gallery_schema.check_columns(batch.schema, where)
    n = batch.num_rows
    out_schema = output_schema(batch.schema, plan.target_dim, plan.uncertainty)
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=out_schema)
    versions = gallery_schema.int_column(batch, gallery_schema.MODEL_VERSION, where)
    extractors = (
        batch.column(gallery_schema.SIDE_INFO_VERSION)
        if gallery_schema.SIDE_INFO_VERSION in batch.schema.names
        else None
    )
    groups = _groups(versions, extractors, n)
    for key in groups:
        if key not in plan.routes:
            raise _no_route(plan, key, where, rows=groups[key])
    needs_side = any(plan.routes[k].side_info_dim for k in groups)
    dims = {plan.routes[k].old_dim for k in groups} - {None}
    if len(dims) > 1:
        raise SchemaError(
            f"{where}: rows need chains reading {sorted(dims)}-d embeddings, but a "
            "shard holds one width; split the shard by version"
        )
    old_dim = dims.pop() if dims else plan.target_dim
    old = gallery_schema.vectors(
        batch,
        gallery_schema.EMBEDDING,
        where,
        dim=old_dim,
        what=f"the chain for {_route_labels(plan, groups)}",
    )
    side = None
    if needs_side:
        side_dims = {plan.routes[k].side_info_dim for k in groups} - {0}
        side = gallery_schema.vectors(
            batch,
            gallery_schema.SIDE_INFO,
            where,
            dim=side_dims.pop() if len(side_dims) == 1 else None,
            what=f"the chain for {_route_labels(plan, groups)}",
        )

    # NaN marks "no prediction" until it becomes a null (rows already at the target keep theirs).
    log_var = np.full(n, np.nan, dtype=np.float32)
    if len(groups) == 1:  # the usual case: no gather/scatter copies
        ((key, _),) = groups.items()
        new, part_var = _run(plan.routes[key], old, side, plan.target_dim, where)
        if part_var is not None:
            log_var[:] = part_var
    else:
        new = np.empty((n, plan.target_dim), dtype=np.float32)
        for key, rows in groups.items():
            route = plan.routes[key]
            part_side = side[rows] if side is not None and route.side_info_dim else None
            new[rows], part_var = _run(route, old[rows], part_side, plan.target_dim, where)
            if part_var is not None:
                log_var[rows] = part_var

    columns = list(batch.columns)
    if gallery_schema.UNCERTAINTY in out_schema.names:
        columns = _with_uncertainty(batch, columns, out_schema, plan, groups, log_var)
    columns[batch.schema.get_field_index(gallery_schema.EMBEDDING)] = gallery_schema.vectors_array(
        new
    )
    i = batch.schema.get_field_index(gallery_schema.MODEL_VERSION)
    columns[i] = pa.array(np.full(n, plan.target, dtype=np.int64)).cast(batch.schema.field(i).type)
    return pa.RecordBatch.from_arrays(columns, schema=out_schema)


def _groups(
    versions: np.ndarray, extractors: pa.Array | None, n: int
) -> dict[GroupKey, np.ndarray | slice]:
    """Row indices per route key (a full slice when the whole batch shares one key)."""
    if extractors is None:
        names: list[str | None] = [None]
        codes = np.zeros(n, dtype=np.int64)
    else:
        encoded = pc.dictionary_encode(extractors)
        names = encoded.dictionary.to_pylist()
        codes = encoded.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)
        names.append(None)
    if n and (versions == versions[0]).all() and (codes == codes[0]).all():
        return {(int(versions[0]), names[int(codes[0])]): slice(None)}
    pairs = versions * (len(names) + 1) + codes
    out: dict[GroupKey, np.ndarray | slice] = {}
    for pair in np.unique(pairs):
        out[(int(pair // (len(names) + 1)), names[int(pair % (len(names) + 1))])] = np.flatnonzero(
            pairs == pair
        )
    return out


def _run(
    route: GroupRunner, old: np.ndarray, side: np.ndarray | None, target_dim: int, where: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The group's embeddings and, when its chain predicts one, the per-row log-variance."""
    if route.runner is None:
        return old, None
    if getattr(route.runner, "predicts_uncertainty", False):
        new, log_var = route.runner.predict(old, side)
    else:
        new, log_var = route.runner(old, side), None
    if new.shape != (len(old), target_dim):
        raise SchemaError(
            f"{where}: {route.label} produced {list(new.shape)}, expected "
            f"[{len(old)}, {target_dim}]; the chain does not end at the target"
        )
    return new, log_var


def _with_uncertainty(
    batch: pa.RecordBatch,
    columns: list[pa.Array],
    out_schema: pa.Schema,
    plan: BatchPlan,
    groups: Mapping[GroupKey, np.ndarray | slice],
    log_var: np.ndarray,
) -> list[pa.Array]:
    """The ``uncertainty`` column: the chain's log-variance for transformed rows, the stored
    value for rows already at the target, null where no chain predicted one."""
    if gallery_schema.UNCERTAINTY in batch.schema.names:
        kept = (
            batch.column(gallery_schema.UNCERTAINTY)
            .cast(pa.float32())
            .to_numpy(zero_copy_only=False)
        )
        for key, rows in groups.items():
            if plan.routes[key].runner is None:
                log_var[rows] = kept[rows]
    column = pa.array(log_var, pa.float32(), mask=np.isnan(log_var))
    if gallery_schema.UNCERTAINTY in batch.schema.names:
        columns[batch.schema.get_field_index(gallery_schema.UNCERTAINTY)] = column
    else:
        columns.append(column)
    assert len(columns) == len(out_schema)
    return columns


def _key_label(family: str, key: GroupKey) -> str:
    return f"{family}@{key[0]} with side-info {key[1] or 'none'}"


def _route_labels(plan: BatchPlan, groups: Mapping[GroupKey, object]) -> str:
    return "; ".join(plan.routes[k].label for k in groups)


def _no_route(plan: BatchPlan, key: GroupKey, where: str, rows: object) -> Exception:
    first = 0 if isinstance(rows, slice) else int(np.asarray(rows)[0])
    versions = {k[0] for k in plan.routes}
    if key[0] in versions:
        extractors = sorted({k[1] or "none" for k in plan.routes if k[0] == key[0]})
        return SideInfoError(
            f"{where}: row {first} holds side-info from {key[1] or 'no extractor'}, but the "
            f"chain planned for {plan.family}@{key[0]} reads {', '.join(extractors)}; "
            "extractors are never mixed: re-index those rows, or make the manifest list "
            "their extractor so a chain is resolved for it"
        )
    return SchemaError(
        f"{where}: row {first} is {_key_label(plan.family, key)}, which the manifest does not "
        f"list (planned: {plan.known()}); the shard and its manifest disagree: restore the "
        "manifest or re-index the shard"
    )

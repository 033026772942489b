"""``fct embed --engine ray``: the shards still to index, one per Ray Data task, on a pool of
actors that each load the models once. It lives beside the upgrade engine, whose Ray session it
shares (``upgrade`` may import ``gallery``; the reverse would be a cycle).

The driver lists the source and decides which shards are done (markers, as the local job
does); each pending shard travels as its item references (ids, paths, tar offsets: never
pixels) and an actor runs exactly the local job's :func:`~fct_registry.gallery.embed_job.
embed_shard` on it: decode in DataLoader workers, embed, write the shard atomically and its
marker. The driver then writes the manifest in shard order, so the gallery's files are the
local engine's, and a run interrupted under one engine resumes under the other (the markers
are the same). Ray's start-up, cluster and CPU reservations are the upgrade engine's
(:class:`~fct_registry.upgrade.engines.ray_data.RayEngine`).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from fct_registry.errors import FctError
from fct_registry.gallery.embed_job import ShardDone, ShardJob, embed_shard
from fct_registry.storage import STORAGE_ENV, Storage, open_storage
from fct_registry.upgrade.engines.ray_data import RayEngine

if TYPE_CHECKING:
    import pyarrow as pa

    from fct_registry.data.base_image_source import Item


@dataclass(frozen=True)
class _ActorJob:
    job: ShardJob
    dest: str
    env: Mapping[str, str | None] = field(repr=False)  # the driver's storage settings
    threads: int = 1


class _EmbedWorker:
    """A Ray actor: models loaded once (unpickled with the job), then whole shards."""

    def __init__(self, payload: bytes) -> None:
        actor: _ActorJob = pickle.loads(payload)
        for var, value in actor.env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        self.job, self.storage = actor.job, open_storage(actor.dest)
        torch.set_num_threads(actor.threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        out: dict[str, list[Any]] = {"index": [], "done": [], "error": []}
        for index, name, items in zip(
            batch.column("index").to_pylist(),
            batch.column("name").to_pylist(),
            batch.column("items").to_pylist(),
            strict=True,
        ):
            done, error = b"", b""
            try:
                result = embed_shard(self.job, self.storage, index, name, pickle.loads(items))
                done = pickle.dumps(result)
            except FctError as exc:  # the data's fault: re-raised as such by the driver
                error = pickle.dumps(FctError(str(exc)) if not _round_trips(exc) else exc)
            out["index"].append(index)
            out["done"].append(done)
            out["error"].append(error)
        return pa.table(
            {
                "index": pa.array(out["index"], pa.int64()),
                "done": pa.array(out["done"], pa.binary()),
                "error": pa.array(out["error"], pa.binary()),
            }
        )


def _round_trips(exc: Exception) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
        return True
    except Exception:
        return False


class RayShardRunner:
    """A ``runner`` for :func:`~fct_registry.gallery.embed_job.embed_source` (see module
    docstring); options as :class:`RayEngine` (``address``, ``num_cpus``, ``workers``,
    ``cpus_per_worker``)."""

    name = "ray"

    def __init__(self, **options: Any) -> None:
        self.engine = RayEngine(**options)  # validates the options; fails early without Ray

    def __call__(
        self, job: ShardJob, storage: Storage, pending: list[tuple[int, str, list[Item]]]
    ) -> Iterator[tuple[int, ShardDone]]:
        engine = self.engine
        with engine._ray() as cpus:  # the upgrade engine's Ray session (started or joined)
            workers = engine._pool_size(cpus, len(pending))
            env = {var: os.environ.get(var) for var in STORAGE_ENV}
            threads = max(1, int(cpus) // workers)  # torch threads per actor: no oversubscription
            payload = pickle.dumps(_ActorJob(job, storage.uri, env, threads))
            rows = [
                {"index": index, "name": name, "items": pickle.dumps(items)}
                for index, name, items in pending
            ]
            kwargs = {"payload": payload}
            for row in engine._on_actors(rows, _EmbedWorker, kwargs, cpus, workers):
                if row["error"]:
                    raise pickle.loads(row["error"])
                yield int(row["index"]), pickle.loads(row["done"])

"""``ray``: the gallery's shards upgraded in parallel by a pool of Ray Data actors.

The dataset is the list of shards still to do; ``map_batches`` runs a callable class on a fixed
pool of actors (``concurrency=``), each loading the chain once (its ONNX graphs are shipped as
bytes, so workers on other nodes need no shared filesystem) and then, per shard, doing exactly
what the local job does (:func:`upgrade_shard`): verify the shard's sha256, stream it in
``batch_size`` batches through the same :func:`~fct_registry.upgrade.upgrade_batch`, and publish
it atomically with the project's deterministic :func:`~fct_registry.gallery.shards.write_shard`.
The driver writes the markers and the manifest with the local job's code.

Why shards rather than ``ray.data.read_parquet`` / ``write_parquet``: ``read_parquet`` splits
files into blocks that follow neither the shards nor the batch size, and skips the manifest's
checksums (a corrupt shard would go unnoticed); ``write_parquet`` names files after the dataset's
uuid and cuts row groups per block with its own writer settings. Its output could hold the same
rows, but not the same files or bytes, so the manifest, resuming and provenance would all differ.
One shard per task keeps the unit of work equal to the unit of atomicity and resume: outputs are
byte-identical to the local engine's, and a run interrupted under one engine resumes under the
other. Read, compute and write all happen in the workers; the driver only moves shard names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry.errors import FctError
from fct_registry.gallery.errors import GalleryError
from fct_registry.gallery.manifest import GroupKey, ShardInfo
from fct_registry.jobs import Stopwatch
from fct_registry.scratch import new_folder
from fct_registry.storage import STORAGE_ENV, Storage, open_storage
from fct_registry.upgrade.batch import BatchPlan, GroupRunner
from fct_registry.upgrade.engines.base import ENGINES, Engine
from fct_registry.upgrade.job import (
    FILES,
    UpgradeJob,
    UpgradeReport,
    finish_job,
    shard_marker,
    start_job,
    upgrade_bar,
    upgrade_shard,
)
from fct_registry.upgrade.runner import OnnxChainRunner

if TYPE_CHECKING:
    import pyarrow as pa

    from fct_registry.upgrade.plan import UpgradePlan


class RayUnavailableError(FctError):
    """``--engine ray`` was asked for but Ray Data is not installed or cannot start."""


_NO_RAY = (
    "--engine ray needs Ray Data, which is not installed; install it with "
    "pip install -r requirements.txt (it pins ray[data]), or use --engine local"
)


# --- what the actors receive -------------------------------------------------------------------


@dataclass(frozen=True)
class _PortableRunner:
    label: str
    graphs: tuple[str, ...] | None  # sha256 of each ONNX step, in order; None: see ``runner``
    runner: Any = None  # a non-ONNX runner, pickled as is (None with no graphs: pass-through)


@dataclass(frozen=True)
class WorkerJob:
    """Everything an actor needs, picklable and free of driver-local paths."""

    source: str
    dest: str
    batch_size: int
    family: str
    target: int
    target_dim: int
    routes: Mapping[GroupKey, _PortableRunner]
    graphs: Mapping[str, bytes]  # sha256 -> ONNX bytes, each graph once
    threads: int | None
    env: Mapping[str, str | None] = field(repr=False)  # storage settings of the driver

    @classmethod
    def build(
        cls, source: Storage, dest: Storage, plan: UpgradePlan, batch_size: int, threads: int | None
    ) -> WorkerJob:
        graphs: dict[str, bytes] = {}
        routes: dict[GroupKey, _PortableRunner] = {}
        for key, route in plan.batch_plan().routes.items():
            if isinstance(route.runner, OnnxChainRunner):
                shas = []
                for path in route.runner.paths:
                    data = Path(path).read_bytes()
                    sha = hashlib.sha256(data).hexdigest()
                    graphs[sha] = data
                    shas.append(sha)
                routes[key] = _PortableRunner(route.label, tuple(shas))
            else:
                routes[key] = _PortableRunner(route.label, None, route.runner)
        env = {var: os.environ.get(var) for var in STORAGE_ENV}
        return cls(
            source.uri,
            dest.uri,
            batch_size,
            plan.family,
            plan.target,
            plan.target_dim,
            routes,
            graphs,
            threads,
            env,
        )

    def batch_plan(self, folder: Path) -> BatchPlan:
        """The plan with its ONNX sessions created here, once (graphs written under
        ``folder``)."""
        for sha, data in self.graphs.items():
            (folder / f"{sha}.onnx").write_bytes(data)
        routes: dict[GroupKey, GroupRunner] = {}
        for key, r in self.routes.items():
            runner = (
                OnnxChainRunner([folder / f"{sha}.onnx" for sha in r.graphs], threads=self.threads)
                if r.graphs is not None
                else r.runner
            )
            routes[key] = GroupRunner(runner, r.label)
        return BatchPlan(self.family, self.target, self.target_dim, routes)


class ShardWorker:
    """A Ray actor: the chain loaded once per worker, then whole shards one after another.

    Failures that are the data's fault (:class:`FctError`) come back as rows, pickled, so the
    driver re-raises the very class and message the local job would have raised (Ray would
    wrap them otherwise).
    """

    def __init__(self, job: WorkerJob) -> None:
        for var, value in job.env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        self._folder = new_folder("fct-ray-graphs-")  # gone with the worker process
        self.plan = job.batch_plan(self._folder)
        self.source, self.dest = open_storage(job.source), open_storage(job.dest)
        self.batch_size = job.batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow as pa

        out: dict[str, list[Any]] = {"path": [], "info": [], "error": [], "cpu": []}
        for path, shard_json in zip(
            batch.column("path").to_pylist(), batch.column("shard").to_pylist(), strict=True
        ):
            cpu = time.process_time()  # this actor's threads (ONNX Runtime's included)
            info, error = "", b""
            try:
                shard = ShardInfo.from_dict(json.loads(shard_json))
                done = upgrade_shard(self.source, self.dest, shard, self.plan, self.batch_size)
                info = json.dumps(done.to_dict())
            except FctError as exc:
                error = _pickle_error(exc)
            out["path"].append(path)
            out["info"].append(info)
            out["error"].append(error)
            out["cpu"].append(time.process_time() - cpu)
        return pa.table(
            {
                "path": pa.array(out["path"], pa.string()),
                "info": pa.array(out["info"], pa.string()),
                "error": pa.array(out["error"], pa.binary()),
                "cpu": pa.array(out["cpu"], pa.float64()),
            }
        )


def _pickle_error(exc: FctError) -> bytes:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:  # an exception class that does not round-trip: keep its message
        return pickle.dumps(FctError(f"{type(exc).__name__}: {exc}"))


# --- the engine ----------------------------------------------------------------------------------


class RayEngine(Engine):
    """Shards in parallel on Ray Data actors; output byte-identical to the local engine's.

    ``address``: a running cluster (``ray://...`` or ``host:port``); default: start a private
    local Ray (``address="local"``, never joining another user's) with ``num_cpus`` CPUs (default:
    the machine's), shut down afterwards. An already initialised Ray (a notebook, tests) is used
    as is and left running. ``workers``: actors (default: one per CPU, at most one per shard).
    ``cpus_per_worker``: the actors' Ray CPU reservation; default leaves about one CPU free for
    Ray's own tasks and the driver (on 2 CPUs: 0.5 each), which small machines need or the
    pipeline stalls. ``threads``: ONNX Runtime threads per actor (default: CPUs / workers).
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        workers: int | None = None,
        cpus_per_worker: float | None = None,
        threads: int | None = None,
    ) -> None:
        for label, value in (
            ("num_cpus", num_cpus),
            ("workers", workers),
            ("threads", threads),
            ("cpus_per_worker", cpus_per_worker),
        ):
            if value is not None and value <= 0:
                raise FctError(f"Ray engine: {label} must be positive, got {value}")
        if importlib.util.find_spec("ray") is None:  # fail before the chains are fetched
            raise RayUnavailableError(_NO_RAY)
        self.address, self.num_cpus, self.workers = address, num_cpus, workers
        self.cpus_per_worker, self.threads = cpus_per_worker, threads
        self.worker_cpu_seconds = 0.0  # CPU the actors reported for the last run

    def _run(self, job: UpgradeJob) -> UpgradeReport:
        clock = Stopwatch()
        self.worker_cpu_seconds = 0.0
        report, state = start_job(job)
        if state is None:
            return report
        source, dest, plan, manifest = job.source, job.dest, job.plan, job.source.manifest

        outputs: dict[str, ShardInfo] = {}
        failures: dict[str, str] = {}
        ready: list[ShardInfo] = []
        for shard in manifest.shards:
            if report.resume(shard, state, dest, outputs):
                continue
            try:  # what the manifest alone shows, before any worker starts
                plan.check_shard(shard, f"{source.uri}/{shard.path}")
            except GalleryError as exc:
                if not job.keep_going:
                    raise
                failures[shard.path] = str(exc)
                continue
            ready.append(shard)

        bar = upgrade_bar(job.progress, manifest)
        bar.update(report.skipped_rows)
        try:
            if ready:
                work = WorkerJob.build(source.storage, dest, plan, job.batch_size, None)
                by_path = {s.path: s for s in ready}
                for path, info, error, worker_cpu in self._execute(work, ready):
                    self.worker_cpu_seconds += worker_cpu
                    if error is not None:
                        if not job.keep_going or not isinstance(error, GalleryError):
                            raise error
                        failures[path] = str(error)
                        continue
                    FILES.mark(dest, path, shard_marker(report.fingerprint, by_path[path], info))
                    outputs[path] = info
                    bar.update(info.rows)
                    bar.set_postfix_str(f"shards {len(outputs)}/{len(manifest.shards)}")
        finally:
            bar.close()
        report.failures = [failures[s.path] for s in manifest.shards if s.path in failures]
        finish_job(job, report, outputs, self.name)
        report.seconds, report.cpu_seconds = clock.read()
        report.cpu_seconds += self.worker_cpu_seconds
        return report

    def _execute(
        self, job: WorkerJob, shards: list[ShardInfo]
    ) -> Iterator[tuple[str, ShardInfo | None, FctError | None, float]]:
        """``(shard, its output info or None, its error or None, actor CPU s)`` as shards
        finish, in any order."""
        with self._ray() as cpus:
            workers = self._pool_size(cpus, len(shards))
            threads = self.threads or max(1, int(cpus) // workers)
            job = dataclasses.replace(job, threads=threads)
            rows = [{"path": s.path, "shard": json.dumps(s.to_dict())} for s in shards]
            for row in self._on_actors(rows, ShardWorker, {"job": job}, cpus, workers):
                error = pickle.loads(row["error"]) if row["error"] else None
                info = ShardInfo.from_dict(json.loads(row["info"])) if row["info"] else None
                yield row["path"], info, error, float(row["cpu"])

    def _pool_size(self, cpus: float, tasks: int) -> int:
        """Actors for ``tasks`` tasks: ``workers``, else one per CPU, never more than tasks."""
        return max(1, min(self.workers or int(cpus), tasks))

    def _on_actors(
        self, rows: list[dict], worker: type, kwargs: dict, cpus: float, workers: int
    ) -> Iterator[dict]:
        """Each of ``rows`` through ``worker(**kwargs)`` on a fixed pool of ``workers`` actors
        (inside :meth:`_ray`); the result rows as they finish, in any order."""
        import ray

        per_worker = self.cpus_per_worker or max(0.25, min(1.0, (cpus - 1) / workers))
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        # A fixed pool, one task in flight per actor: tasks (shards) take seconds, so queueing
        # a second one on a busy actor only risks an idle one at the end.
        pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1)
        ds = ds.map_batches(
            worker,
            fn_constructor_kwargs=kwargs,
            batch_size=1,
            batch_format="pyarrow",
            compute=pool,
            num_cpus=per_worker,
        )
        yield from ds.iter_rows()

    @contextlib.contextmanager
    def _ray(self) -> Iterator[float]:
        """A Ray to run on, and its CPU count; shut down afterwards only if started here."""
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise RayUnavailableError(f"{_NO_RAY} ({exc})") from None
        started = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address or "local",
                    num_cpus=None if self.address else (self.num_cpus or os.cpu_count()),
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    configure_logging=True,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RayUnavailableError(
                    f"cannot start or reach Ray at {self.address or 'a new local instance'} "
                    f"({exc}); check --ray-address (e.g. ray://head:10001), or leave it out "
                    "to start a local Ray"
                ) from None
            started = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the engine shows its own shard/row bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # ... and Ray Data would warn, once, that its own bars are off
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        try:
            yield float(ray.cluster_resources().get("CPU", 1.0))
        finally:
            if started:
                ray.shutdown()  # never `ray stop`: that kills other users' Ray processes


@ENGINES.register("ray")
def build_ray(**options: Any) -> Engine:
    return RayEngine(**options)

"""The resumable-job core that ``fct embed``, ``fct upgrade`` (Parquet/S3 and pgvector) and
``fct backfill run`` run on; the jobs differ only in what a shard computes.

- :mod:`.files`: a job's progress files in its destination (job file, one marker per finished
  shard), written as canonical JSON, checked against the bytes they describe, removed at the end;
- :mod:`.fingerprint`: a job's identity, the sha256 of its canonical JSON;
- :mod:`.lease`: the ``--out`` lease a job holds for its whole run (O_EXCL file or S3
  conditional write), taken over from a holder that died on this host
  (:mod:`fct_registry.liveness`);
- :mod:`.progress`: the progress bar (a disabled tqdm when not asked for);
- :mod:`.clock`: the wall-clock and CPU seconds a job's report gives;
- :mod:`.faults`: the named points (``shard:<i>``, ``marker:<i>`` ...) that the crash tests
  replace to kill a run exactly there.

Atomic publication is the storage's (``Storage.write_bytes`` and ``write_shard``: temporary
file, fsync, rename or a single PUT); the lease and the job files go through
:mod:`fct_registry.storage`. This package sits just above storage: it imports no gallery code.
"""

from __future__ import annotations

from fct_registry.jobs.clock import Stopwatch
from fct_registry.jobs.faults import Hook, batch_hook, reached
from fct_registry.jobs.files import JobFiles, JobStore, intact, json_bytes, read_json
from fct_registry.jobs.fingerprint import fingerprint
from fct_registry.jobs.lease import LeaseHeldError, lease
from fct_registry.jobs.progress import progress_bar

__all__ = [
    "Hook",
    "JobFiles",
    "JobStore",
    "LeaseHeldError",
    "Stopwatch",
    "batch_hook",
    "fingerprint",
    "intact",
    "json_bytes",
    "lease",
    "progress_bar",
    "reached",
    "read_json",
]

"""Checksums of model artifacts, and the content hash that makes registration idempotent.

Two different hashes, for two different questions:

* :func:`file_checksums` — sha256 of every file a model runs from (weights, spec, ONNX graph,
  pyfunc runtime). Recorded in ``checksums.json`` beside the files, whose digest
  (:func:`checksums_digest`) is the version's ``fct.checksums_sha256`` tag, and verified before a
  model is run, so a modified or corrupted artifact store copy is refused instead of silently
  producing wrong embeddings.
* :func:`content_hash` — sha256 over the specs and tensor values: the model's identity. It does
  not depend on file formats or on the ONNX export, so re-registering unchanged pipeline outputs
  finds the existing version (no new one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry._files import UnsafePathError, contained_name, sha256_file
from fct_registry.errors import FctError

if TYPE_CHECKING:
    from torch import nn

CHECKSUMS_FILE = "checksums.json"
_CHUNK = 1 << 20


class ChecksumError(FctError):
    """A model artifact is missing or its sha256 differs from the one recorded at registration."""


def file_checksums(root: str | Path, files: Iterable[str]) -> dict[str, str]:
    """``{relative posix path: sha256}`` for ``files`` under ``root``, sorted by path."""
    root = Path(root)
    return {rel: sha256_file(root / rel) for rel in sorted(files)}


def write_checksums(root: str | Path, files: Iterable[str]) -> dict[str, str]:
    """Hash ``files`` and write them to ``root/checksums.json``; return the mapping."""
    sums = file_checksums(root, files)
    (Path(root) / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")
    return sums


_TAMPERED = (
    "a model lists its own files by relative names; the artifact was modified: re-register it"
)


def read_checksums(root: str | Path) -> dict[str, str]:
    path = Path(root) / CHECKSUMS_FILE
    if not path.is_file():
        raise ChecksumError(
            f"{path} is missing, so the model's files cannot be verified; "
            "re-save or re-register the model with fct_registry.registry"
        )
    try:
        sums = json.loads(path.read_text())
    except ValueError as exc:
        raise ChecksumError(
            f"{path} is not valid JSON ({exc}); the artifact was modified or "
            "corrupted: re-register the model"
        ) from exc
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise ChecksumError(
            f"{path} must map file paths to sha256 hex digests; re-register the model"
        )
    # Names become paths under the artifact: one outside it (absolute, ``..``) would let a
    # tampered artifact probe this machine's files, so it is refused like a gallery's shard.
    for name in sums:
        try:
            contained_name(name, f"{path}: file name {name!r}", fix=_TAMPERED)
        except UnsafePathError as exc:
            raise ChecksumError(str(exc)) from None
    return sums


def checksums_digest(sums: Mapping[str, str]) -> str:
    """sha256 of a checksums mapping (canonical JSON): the registry's compact record of it."""
    return hashlib.sha256(canonical_json(dict(sums)).encode()).hexdigest()


def verify_checksums(
    root: str | Path,
    expected: Mapping[str, str] | None = None,
    *,
    what: str | None = None,
    expected_digest: str | None = None,
) -> dict[str, str]:
    """Check every file listed in ``root/checksums.json`` (and in ``expected``, the registry's
    record, when given) against its sha256; raise :class:`ChecksumError` naming the first
    mismatching file. Returns the verified mapping.

    Checking the registry's record as well matters: whoever can rewrite an artifact in the store
    can also rewrite the ``checksums.json`` next to it, but not the version's tags. The record is
    either the mapping itself (``expected``, older versions' ``fct.checksums`` tag) or its
    :func:`checksums_digest` (``expected_digest``, the ``fct.checksums_sha256`` tag).
    """
    root = Path(root)
    label = what or str(root)
    recorded = read_checksums(root)
    if expected_digest is not None and checksums_digest(recorded) != expected_digest:
        raise ChecksumError(
            f"{label}: checksums.json does not match the digest recorded in the registry at "
            "registration; the artifact store copy was modified: restore it or re-register "
            "the model"
        )
    if expected is not None and dict(expected) != recorded:
        differing = sorted(
            k for k in set(expected) | set(recorded) if expected.get(k) != recorded.get(k)
        )
        raise ChecksumError(
            f"{label}: checksums.json disagrees with the checksums recorded in "
            f"the registry at registration (files: {', '.join(differing)}); the "
            "artifact store copy was modified: restore it or re-register the model"
        )
    for rel, want in recorded.items():
        path = root / rel
        if not path.is_file():
            raise ChecksumError(
                f"{label}: artifact file {rel} is missing; restore the artifact "
                "store copy or re-register the model"
            )
        got = sha256_file(path)
        if got != want:
            raise ChecksumError(
                f"{label}: artifact file {rel} has sha256 {got[:12]}…, but "
                f"{want[:12]}… was recorded at registration; the file was "
                "modified or corrupted: restore it or re-register the model"
            )
    return recorded


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(modules: Sequence[nn.Module], specs: Sequence[Mapping[str, Any]]) -> str:
    """The identity of a model (or a chain of hops): sha256 over each spec and tensor value.

    Independent of how the weights are serialised, so the same trained model always hashes the
    same, whether it comes from the pipeline's outputs or from an artifact download.
    """
    import torch

    if len(modules) != len(specs):
        raise FctError(f"{len(modules)} modules but {len(specs)} specs; pass one spec per hop")
    digest = hashlib.sha256(b"fct-content-v1")
    for module, spec in zip(modules, specs, strict=True):
        digest.update(canonical_json(spec).encode())
        for name, tensor in sorted(module.state_dict().items()):
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{data.dtype}|{list(data.shape)}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

"""Artifact checksums (tamper detection) and the content hash (registration identity)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from fct_registry.models.transformations import TRANSFORMATIONS
from fct_registry.registry.checksums import (
    CHECKSUMS_FILE,
    ChecksumError,
    content_hash,
    sha256_file,
    verify_checksums,
    write_checksums,
)


def _folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (tmp_path / "graph.onnx").write_bytes(b"graph")
    return write_checksums(tmp_path, ["a/weights.bin", "graph.onnx"])


def test_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # > one read chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_untouched_folder_verifies(tmp_path):
    sums = _folder(tmp_path)
    assert verify_checksums(tmp_path) == sums
    assert verify_checksums(tmp_path, expected=sums) == sums


def test_modified_file_is_named(tmp_path):
    _folder(tmp_path)
    (tmp_path / "a" / "weights.bin").write_bytes(b"\x00\x02" * 1000)
    with pytest.raises(ChecksumError, match=r"a/weights\.bin.*re-register"):
        verify_checksums(tmp_path)


def test_missing_file_is_named(tmp_path):
    _folder(tmp_path)
    (tmp_path / "graph.onnx").unlink()
    with pytest.raises(ChecksumError, match=r"graph\.onnx is missing"):
        verify_checksums(tmp_path)


def test_rewritten_checksums_file_is_caught_by_the_registry_record(tmp_path):
    """Whoever rewrites a file in the store can rewrite checksums.json too; not the tag."""
    recorded = _folder(tmp_path)
    (tmp_path / "graph.onnx").write_bytes(b"evil graph")
    write_checksums(tmp_path, ["a/weights.bin", "graph.onnx"])
    verify_checksums(tmp_path)  # self-consistent again...
    with pytest.raises(ChecksumError, match=r"graph\.onnx"):
        verify_checksums(tmp_path, expected=recorded)  # ...but not with the registry's record


def test_missing_or_garbled_checksums_file(tmp_path):
    with pytest.raises(ChecksumError, match="missing"):
        verify_checksums(tmp_path)
    (tmp_path / CHECKSUMS_FILE).write_text("{not json")
    with pytest.raises(ChecksumError, match="not valid JSON"):
        verify_checksums(tmp_path)
    (tmp_path / CHECKSUMS_FILE).write_text(json.dumps([1, 2]))
    with pytest.raises(ChecksumError, match="must map"):
        verify_checksums(tmp_path)


def _transformation(seed: int):
    torch.manual_seed(seed)
    spec = {
        "kind": "transformation",
        "type": "fct",
        "old_dim": 4,
        "new_dim": 3,
        "side_info_dim": 2,
        "hidden_dim": 5,
    }
    return TRANSFORMATIONS.build("fct", old_dim=4, new_dim=3, side_info_dim=2, hidden_dim=5), spec


def test_content_hash_is_the_models_identity():
    a, spec = _transformation(0)
    b, _ = _transformation(0)
    c, _ = _transformation(1)
    assert content_hash([a], [spec]) == content_hash([b], [spec])  # same values, other object
    assert content_hash([a], [spec]) != content_hash([c], [spec])  # other weights
    assert content_hash([a], [spec]) != content_hash([a], [{**spec, "hidden_dim": 6}])
    assert content_hash([a, c], [spec, spec]) != content_hash([c, a], [spec, spec])  # hop order
    with torch.no_grad():
        b.mixer[-1].bias[0] += 1e-6  # any change to any tensor changes it
    assert content_hash([a], [spec]) != content_hash([b], [spec])


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.bin", "a/../../outside.bin"])
def test_checksums_naming_a_file_outside_the_artifact_are_refused(tmp_path, name):
    # A tampered checksums.json must not make verification read (probe) files elsewhere.
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    digest = hashlib.sha256(b"secret").hexdigest()
    (artifact / CHECKSUMS_FILE).write_text(json.dumps({name: digest}))
    with pytest.raises(ChecksumError, match="relative names"):
        verify_checksums(artifact)

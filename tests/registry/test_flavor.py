"""The fct MLflow flavor: save/log/load round trips, pyfunc predictions, tamper detection."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from fct_registry.models import TransformationChain
from fct_registry.registry import flavor
from fct_registry.registry import tags as T
from fct_registry.registry.checksums import ChecksumError
from tests.registry import builders


def _torch(module, *inputs):
    with torch.no_grad():
        return module(*inputs).numpy()


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory) -> tuple[Path, list, list]:
    """A two-hop chain saved once: 6-d -> 5-d -> 7-d, both hops reading 4-d side-info."""
    a, spec_a = builders.transformation(1, old_dim=6, new_dim=5)
    b, spec_b = builders.transformation(2, old_dim=5, new_dim=7)
    path = tmp_path_factory.mktemp("flavor") / "chain"
    flavor.save_model([a, b], path, specs=[spec_a, spec_b])
    return path, [a, b], [spec_a, spec_b]


def test_saved_folder_holds_every_hop_onnx_and_checksums(chain_dir):
    path, _, specs = chain_dir
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {
        "MLmodel",
        "model.onnx",
        "checksums.json",
        "modules/0/model.safetensors",
        "modules/0/spec.json",
        "modules/1/model.safetensors",
        "modules/1/spec.json",
    } <= names
    assert not any(n.endswith((".pt", ".pkl", ".pth")) for n in names)  # nothing to unpickle
    conf = flavor.flavor_conf(path)
    assert conf["specs"] == specs and conf["kind"] == "transformation" and conf["chain"]
    assert (conf["old_dim"], conf["side_info_dim"], conf["output_dim"]) == (6, 4, 7)
    assert conf["onnx_max_abs_diff"] <= 1e-5
    assert json.loads((path / "checksums.json").read_text()) == conf["checksums"]


def test_load_gives_a_transformation_chain_equal_to_the_hops(chain_dir):
    path, (a, b), _ = chain_dir
    loaded = flavor.load_local(path)
    assert isinstance(loaded, TransformationChain) and len(loaded.hops) == 2
    assert not loaded.training
    old, side = torch.randn(5, 6), torch.randn(5, 4)
    np.testing.assert_array_equal(
        _torch(loaded, old, side), _torch(b, torch.from_numpy(_torch(a, old, side)), side)
    )


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_pyfunc_predict_equals_torch(chain_dir, backend):
    path, (a, b), _ = chain_dir
    model = mlflow.pyfunc.load_model(str(path), model_config={"backend": backend})
    old, side = np.random.rand(11, 6), np.random.rand(11, 4)  # float64: cast by the wrapper
    want = _torch(
        TransformationChain([a, b]), torch.from_numpy(old).float(), torch.from_numpy(side).float()
    )
    got = model.predict({"old_embedding": old, "side_info": side})
    assert isinstance(got, np.ndarray) and got.shape == (11, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    frame = pd.DataFrame({"old_embedding": list(old), "side_info": list(side)})
    np.testing.assert_allclose(model.predict(frame), want, atol=1e-5, rtol=0)


def test_pyfunc_rejects_wrong_inputs_with_the_expected_shape(chain_dir):
    model = mlflow.pyfunc.load_model(str(chain_dir[0]))
    with pytest.raises(flavor.FlavorError, match="missing input 'side_info'"):
        model.predict({"old_embedding": np.zeros((2, 6))})
    with pytest.raises(flavor.FlavorError, match=r"expected \[N, 6\]"):
        model.predict({"old_embedding": np.zeros((2, 5)), "side_info": np.zeros((2, 4))})


def test_no_side_info_model_needs_no_side_info(tmp_path):
    module, spec = builders.transformation(3, kind="fct-no-side-info")
    flavor.save_model(module, tmp_path / "m", spec=spec)
    old = np.random.rand(4, 6).astype(np.float32)
    got = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict({"old_embedding": old})
    np.testing.assert_allclose(
        got, _torch(module, torch.from_numpy(old), torch.zeros(4, 0)), atol=1e-5
    )


def test_image_model_round_trip(tmp_path):  # embedding models: test_onnx_export.py
    module, spec = builders.side_info(4)
    flavor.save_model(module, tmp_path / "m", spec=spec)
    loaded = flavor.load_local(tmp_path / "m")
    assert type(loaded) is type(module)
    images = np.random.rand(3, 1, 12, 12).astype(np.float32)
    want = _torch(module, torch.from_numpy(images))
    np.testing.assert_array_equal(_torch(loaded, torch.from_numpy(images)), want)
    got = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(images)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert mlflow.onnx.load_model(str(tmp_path / "m")).graph.input[0].name == "images"


def test_tampered_folder_is_refused_before_running(chain_dir, tmp_path):
    import shutil

    path = tmp_path / "copy"
    shutil.copytree(chain_dir[0], path)
    weights = path / "modules" / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"modules/1/model\.safetensors"):
        flavor.load_local(path)
    with pytest.raises(ChecksumError, match=r"modules/1/model\.safetensors"):
        mlflow.pyfunc.load_model(str(path))


def test_bad_inputs_name_the_fix(tmp_path):
    a, spec_a = builders.transformation(1, old_dim=6, new_dim=5)
    with pytest.raises(flavor.FlavorError, match="do not connect"):
        flavor.save_model([a, a], tmp_path / "x", specs=[spec_a, spec_a])
    with pytest.raises(flavor.FlavorError, match="does not describe the module"):
        flavor.save_model(a, tmp_path / "y", spec={**spec_a, "hidden_dim": 9})
    with pytest.raises(flavor.FlavorError, match="exactly one of spec"):
        flavor.save_model(a, tmp_path / "z")
    emb, spec_e = builders.embedding()
    with pytest.raises(flavor.FlavorError, match="share a kind"):
        flavor.save_model([a, emb], tmp_path / "w", specs=[spec_a, spec_e])


def test_log_register_and_load_through_the_registry(sqlite_store, tmp_path):
    """log_model -> registered version with checksums -> load_model(models:/...) verifies them
    against the registry's tag, so rewriting the artifact *and* checksums.json is caught."""
    a, spec_a = builders.transformation(1, old_dim=6, new_dim=5)
    b, spec_b = builders.transformation(2, old_dim=5, new_dim=7)
    with mlflow.start_run():
        info = flavor.log_model(
            TransformationChain([a, b]),
            "chain",
            specs=[spec_a, spec_b],
            registered_model_name="fam-transformations",
            tags={T.ROLE: T.ROLE_CHAIN},
            description="**a chain**",
        )
    assert info.registered_model_version == 1
    mv = mlflow.MlflowClient().get_model_version("fam-transformations", "1")
    assert mv.tags[T.ROLE] == T.ROLE_CHAIN and mv.description == "**a chain**"
    assert json.loads(mv.tags[T.CHECKSUMS]) == info.flavors["fct"]["checksums"]
    assert mv.tags[T.CONTENT_HASH] == info.flavors["fct"]["content_hash"]

    old, side = torch.randn(3, 6), torch.randn(3, 4)
    loaded = flavor.load_model("models:/fam-transformations/1")
    np.testing.assert_allclose(
        _torch(loaded, old, side), _torch(TransformationChain([a, b]), old, side), atol=0
    )
    pyfunc = mlflow.pyfunc.load_model("models:/fam-transformations/1")
    assert pyfunc.predict({"old_embedding": old.numpy(), "side_info": side.numpy()}).shape == (3, 7)

    # Rewrite a weight file in the artifact store and its checksums.json to match.
    stored = Path(
        mlflow.MlflowClient()
        .get_logged_model(info.model_id)
        .artifact_location.removeprefix("file://")
    )
    weights = stored / "modules" / "0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    from fct_registry.registry.checksums import write_checksums

    write_checksums(stored, json.loads((stored / "checksums.json").read_text()))
    with pytest.raises(ChecksumError, match="registry"):
        flavor.load_model("models:/fam-transformations/1", dst_path=str(tmp_path))

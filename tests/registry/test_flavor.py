"""The fct MLflow flavor: save/log/load round trips, pyfunc predictions, tamper detection."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from fct_registry.models.transformations import TransformationChain
from fct_registry.registry import flavor
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.checksums import ChecksumError, checksums_digest
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
        f"code/{flavor.runtime_file()[0]}.py",
        "input_example.json",
        "serving_input_example.json",
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
    old = np.random.rand(11, 6).astype(np.float32)
    side = np.random.rand(11, 4).astype(np.float32)
    want = _torch(TransformationChain([a, b]), torch.from_numpy(old), torch.from_numpy(side))
    got = model.predict({"old_embedding": old, "side_info": side})
    assert isinstance(got, np.ndarray) and got.shape == (11, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    frame = pd.DataFrame({"old_embedding": list(old), "side_info": list(side)})
    np.testing.assert_allclose(model.predict(frame), want, atol=1e-5, rtol=0)


def test_two_runtimes_loaded_in_one_process_each_run_their_own(chain_dir, tmp_path, monkeypatch):
    # MLflow imports the loader module by name and Python keeps the first one: under a fixed name
    # a model saved by another release would run the runtime of whichever model loaded first.
    path, (a, b), specs = chain_dir
    name, source = flavor.runtime_file()
    other = source + b"\nRELEASE = 'other'\n"
    other_name = f"fct_pyfunc_{hashlib.sha256(other).hexdigest()[:16]}"
    monkeypatch.setattr(flavor, "runtime_file", lambda: (other_name, other))
    flavor.save_model([a, b], tmp_path / "other", specs=specs)
    monkeypatch.undo()

    first = mlflow.pyfunc.load_model(str(path))
    second = mlflow.pyfunc.load_model(str(tmp_path / "other"))
    assert (first.loader_module, second.loader_module) == (name, other_name)
    # each runs its own runtime (any model's copy of the first one may have been imported first,
    # even from a folder since deleted: the marker tells them apart, not the file)
    assert sys.modules[other_name].RELEASE == "other"
    assert not hasattr(sys.modules[name], "RELEASE")
    old = np.random.rand(3, 6).astype(np.float32)
    side = np.random.rand(3, 4).astype(np.float32)
    inputs = {"old_embedding": old, "side_info": side}
    np.testing.assert_array_equal(first.predict(inputs), second.predict(inputs))


def test_every_model_has_a_signature_of_named_tensors_and_an_input_example(chain_dir, tmp_path):
    from mlflow.models import Model

    model = Model.load(str(chain_dir[0]))
    inputs = {s.name: (s.type, s.shape) for s in model.signature.inputs.inputs}
    f32 = np.dtype(np.float32)
    assert inputs == {"old_embedding": (f32, (-1, 6)), "side_info": (f32, (-1, 4))}
    (out,) = model.signature.outputs.inputs
    assert (out.name, out.type, out.shape) == ("new_embedding", f32, (-1, 7))
    example = model.load_input_example(str(chain_dir[0]))
    assert set(example) == {"old_embedding", "side_info"}
    assert mlflow.pyfunc.load_model(str(chain_dir[0])).predict(example).shape == (2, 7)

    module, spec = builders.embedding()
    flavor.save_model(module, tmp_path / "e", spec=spec)
    image_model = Model.load(str(tmp_path / "e"))
    (images,) = image_model.signature.inputs.inputs
    assert (images.name, images.type, images.shape) == ("images", f32, (-1, 1, 12, 12))
    example = image_model.load_input_example(str(tmp_path / "e"))["images"]
    assert example.dtype == np.float32 and example.min() >= 0 and example.max() <= 1


def test_pyfunc_rejects_wrong_inputs_with_the_expected_shape(chain_dir):
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(str(chain_dir[0]))
    old, side = np.zeros((2, 6), np.float32), np.zeros((2, 4), np.float32)
    with pytest.raises(MlflowException, match=r"missing inputs \['side_info'\]"):
        model.predict({"old_embedding": old})
    with pytest.raises(MlflowException, match=r"expected shape \(-1, 6\)"):
        model.predict({"old_embedding": np.zeros((2, 5), np.float32), "side_info": side})
    with pytest.raises(MlflowException, match=r"dtype of input float64 does not match.*float32"):
        model.predict({"old_embedding": old.astype(np.float64), "side_info": side})
    with pytest.raises(MlflowException, match="'side_info' holds NaN or infinite values"):
        model.predict({"old_embedding": old, "side_info": np.full((2, 4), np.nan, np.float32)})
    # The runtime checks on its own too (a caller that bypasses the signature).
    runtime = model._model_impl
    with pytest.raises(MlflowException, match="'old_embedding' has dtype int64, expected float32"):
        runtime.predict({"old_embedding": np.zeros((2, 6), np.int64), "side_info": side})
    with pytest.raises(MlflowException, match=r"expected \[N, 6\]"):
        runtime.predict({"old_embedding": np.zeros((2, 5), np.float32), "side_info": side})


def test_images_outside_zero_one_or_not_float_are_refused(tmp_path):
    from mlflow.exceptions import MlflowException

    module, spec = builders.embedding()
    flavor.save_model(module, tmp_path / "e", spec=spec)
    model = mlflow.pyfunc.load_model(str(tmp_path / "e"))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 1, 12, 12))
    with pytest.raises(MlflowException, match="dtype of input uint8 does not match"):
        model.predict(pixels.astype(np.uint8))
    with pytest.raises(MlflowException, match=r"outside \[0, 1\].*divide by 255"):
        model.predict(pixels.astype(np.float32))
    with pytest.raises(MlflowException, match=r"outside \[0, 1\]"):
        model.predict(np.full((2, 1, 12, 12), -0.5, np.float32))
    assert model.predict((pixels / 255).astype(np.float32)).shape == (2, 6)


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
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"modules/1/model\.safetensors.*modified"):
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
            tags={fct_tags.ROLE: fct_tags.ROLE_CHAIN},
            description="**a chain**",
        )
    assert info.registered_model_version == 1
    mv = mlflow.MlflowClient().get_model_version("fam-transformations", "1")
    assert mv.tags[fct_tags.ROLE] == fct_tags.ROLE_CHAIN and mv.description == "**a chain**"
    assert mv.tags[fct_tags.CHECKSUMS_SHA256] == checksums_digest(info.flavors["fct"]["checksums"])
    assert (
        fct_tags.CHECKSUMS not in mv.tags
    )  # the mapping is an artifact (checksums.json), not a tag
    assert mv.tags[fct_tags.CONTENT_HASH] == info.flavors["fct"]["content_hash"]
    # Lineage as mlflow.register_model records it: the logged model lists its version.
    logged = mlflow.MlflowClient().get_logged_model(info.model_id)
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "fam-transformations", "version": 1}
    ]
    assert mv.source == f"models:/{info.model_id}" and logged.name == "chain"

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

"""The external-model loader: every source kind becomes the same validated ONNX graph, and bad
input is a one-line error naming the params field and the fix, with nothing written."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from fct_registry.config import ModelSource, PreprocessConfig, parse_params
from fct_registry.errors import ConfigError
from fct_registry.layout import Layout
from fct_registry.registry.external import ExternalModelError, load_external
from tests.conftest import ROOT

GRAY = PreprocessConfig(resize=28, crop=28, mean=[0.5], std=[0.25], colour="gray")


class Net(nn.Module):
    def __init__(self, dim: int = 8, flat: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4, dim)
        self.flat = flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.conv(x).mean((2, 3)))
        return y if self.flat else y.unsqueeze(-1)  # [N, D, 1] when not flat


class Unexportable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :8]
        return torch.linalg.eigh(y.T @ y)[0].unsqueeze(0).expand(x.shape[0], -1).contiguous()


def _source(raw: dict) -> ModelSource:
    return ModelSource.model_validate(raw)


def _onnx(path: Path, module: nn.Module) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (torch.rand(4, 1, 28, 28),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
        )
    return path


def _want(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module.eval()((x - 0.5) / 0.25).numpy()


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_every_file_kind_gives_the_models_own_outputs(net: Net, tmp_path: Path) -> None:
    _onnx(tmp_path / "m.onnx", net)
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 1, 28, 28)), str(tmp_path / "m.pt"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    (tmp_path / "factory_mod.py").write_text(
        "from tests.registry.test_external import Net\n\ndef make():\n    return Net()\n"
    )
    x = torch.rand(5, 1, 28, 28)
    for raw in (
        {"onnx": {"path": "m.onnx"}},
        {"torchscript": {"path": "m.pt"}},
        {"entrypoint": {"factory": "factory_mod:make", "weights": "w.pt"}},
    ):
        loaded = load_external(
            _source(raw), GRAY, role="embedding", dim=8, where="versions.1", base=tmp_path
        )
        np.testing.assert_allclose(loaded.module(x).numpy(), _want(net, x), atol=1e-5)
        assert loaded.record["kind"] == next(iter(raw))
        assert len(loaded.record["sha256"]) == 64
        assert loaded.spec["input_shape"] == [1, 28, 28] and loaded.spec["external"]


def test_module_survives_save_and_load(net: Net, tmp_path: Path) -> None:
    """Saved as safetensors + spec like any model: same graph, same content hash."""
    from fct_registry.models.io import load_model, save_model
    from fct_registry.registry.checksums import content_hash

    loaded = load_external(
        _source({"onnx": {"path": str(_onnx(tmp_path / "m.onnx", net))}}),
        GRAY,
        role="embedding",
        dim=8,
        where="versions.1",
    )
    save_model(loaded.module, loaded.spec, tmp_path / "v1")
    again, spec = load_model(tmp_path / "v1")
    x = torch.rand(3, 1, 28, 28)
    np.testing.assert_array_equal(again(x).numpy(), loaded.module(x).numpy())
    assert content_hash([again], [spec]) == content_hash([loaded.module], [loaded.spec])


def _error(raw: dict, tmp_path: Path, pp: PreprocessConfig = GRAY, dim: int = 8) -> str:
    with pytest.raises(ExternalModelError) as err:
        load_external(
            _source(raw), pp, role="embedding", dim=dim, where="versions.2", base=tmp_path
        )
    message = str(err.value)
    assert "\n" not in message
    return message


def test_output_not_n_by_d_is_refused(tmp_path: Path) -> None:
    _onnx(tmp_path / "cube.onnx", Net(flat=False))
    message = _error({"onnx": {"path": "cube.onnx"}}, tmp_path)
    assert "[3, 8, 1], not [N, D]" in message and "pooled embeddings" in message
    torch.jit.save(torch.jit.script(Net(flat=False)), str(tmp_path / "cube.pt"))
    assert "not [N, D]" in _error({"torchscript": {"path": "cube.pt"}}, tmp_path)


def test_wrong_width_names_the_field(net: Net, tmp_path: Path) -> None:
    _onnx(tmp_path / "m.onnx", net)
    message = _error({"onnx": {"path": "m.onnx"}}, tmp_path, dim=16)
    assert "returns 8-d vectors but versions.2.embedding_dim is 16; set embedding_dim: 8" in message


def test_preprocessing_that_does_not_fit_the_input(net: Net, tmp_path: Path) -> None:
    _onnx(tmp_path / "m.onnx", net)
    rgb = PreprocessConfig(resize=32, crop=32, mean=[0.5] * 3, std=[0.25] * 3, colour="rgb")
    message = _error({"onnx": {"path": "m.onnx"}}, tmp_path, pp=rgb)
    assert message.startswith("versions.2.preprocess does not fit the model's input")
    assert "set crop and colour" in message
    torch.jit.save(torch.jit.script(net), str(tmp_path / "m.pt"))
    message = _error({"torchscript": {"path": "m.pt"}}, tmp_path, pp=rgb)
    assert "preprocessing does not fit the model's input" in message


def test_torchscript_that_cannot_be_exported(tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(Unexportable()), str(tmp_path / "eigh.pt"))
    message = _error({"torchscript": {"path": "eigh.pt"}}, tmp_path)
    assert "cannot be exported to ONNX" in message
    assert "give `source: {onnx: {path: FILE}}`" in message


def test_missing_file_and_unresolvable_uri(tmp_path: Path, monkeypatch) -> None:
    message = _error({"onnx": {"path": "nope.onnx"}}, tmp_path)
    assert "versions.2.source.onnx.path: nope.onnx not found" in message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    message = _error({"mlflow": {"uri": "models:/prod-embedder/4"}}, tmp_path)
    assert message.startswith("versions.2.source.mlflow.uri: models:/prod-embedder/4 does not")
    assert "check the model name, version or alias" in message


def _params(**version) -> dict:
    return {"versions": {1: {"embedding_dim": 8, **version}}}


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ({"source": {"onnx": {"path": "m.onnx"}}}, "`source: onnx` needs `preprocess`"),
        (
            {
                "source": {"onnx": {"path": "m.onnx"}},
                "preprocess": {"resize": 28, "crop": 28, "mean": [0.5], "std": [0.2]},
            },
            "mean has 1 values for colour rgb (3 channels); give one per channel",
        ),
        ({"source": {"mlflow": {"uri": "prod-embedder/3"}}}, "String should match pattern"),
        (
            {
                "preprocess": {
                    "resize": 28,
                    "crop": 28,
                    "mean": [0.5],
                    "std": [0.2],
                    "colour": "gray",
                }
            },
            "preprocess applies to a model given by `source`",
        ),
    ],
)
def test_config_errors_name_the_field(version: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"versions\.1") as err:
        parse_params(_params(**version))
    assert message in str(err.value)


def test_mlflow_source_may_leave_preprocess_to_the_model() -> None:
    params = parse_params(_params(source={"mlflow": {"uri": "models:/prod-embedder@prod"}}))
    assert params.versions[1].preprocess is None


def test_family_mixes_external_and_trained_versions_but_not_bct_on_them() -> None:
    raw = {
        "versions": {
            1: {"source": {"mlflow": {"uri": "models:/prod-embedder/1"}}, "embedding_dim": 8},
            2: {"embedding_dim": 16},
        },
        "transformations": {"v1_to_v2": {"from": 1, "to": 2}},
    }
    assert parse_params(raw).versions[2].source is None
    with pytest.raises(ConfigError, match="bct 'b' retrains or reads the classifier"):
        parse_params({**raw, "bct": {"b": {"old": 1, "new": 2}}})


def test_stage_refuses_bad_model_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """Through the DVC entry point: exit 2, `error: <one line>`, no output folder."""
    _onnx(tmp_path / "cube.onnx", Net(flat=False))
    raw = {
        "device": "cpu",
        "side_info": {"trained_with": None},
        "versions": {
            1: {
                "source": {"onnx": {"path": "cube.onnx"}},
                "embedding_dim": 8,
                "preprocess": GRAY.model_dump(),
            }
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.train_version", "--version", "1"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: versions.1: cube.onnx's output is [3, 8, 1], not [N, D]")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "outputs").exists() or not any(
        Layout(tmp_path / "outputs").root.rglob("*.*")
    )


@pytest.mark.parametrize(("have", "channels"), [(3, 1), (1, 3), (3, 3)])
def test_stage_preprocessing_matches_fct_embed_decoding(have: int, channels: int) -> None:
    """The stage embeds prepared uint8 tensors; `fct embed` decodes image files: the same
    pixels must reach the model (colour, shrink, crop), checked image by image."""
    import io

    from PIL import Image

    from fct_registry.data.decode import ImageTransform, decode
    from fct_registry.models.external import preprocess_images

    gen = torch.Generator().manual_seed(have * 10 + channels)
    images = torch.randint(0, 256, (3, have, 45, 38), dtype=torch.uint8, generator=gen)
    got = preprocess_images(images, 32, 28, channels)
    transform = ImageTransform.for_input_shape([channels, 28, 28], resize=32)
    for i, image in enumerate(images):
        pixels = image.permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if have == 1 else pixels).save(buffer, "PNG")
        want = decode(buffer.getvalue(), transform, f"image {i}")
        want = want.float() / 255 if want.dtype == torch.uint8 else want
        torch.testing.assert_close(got[i], want, atol=1e-6, rtol=0)


def test_module_pickles_after_running(net: Net, tmp_path: Path) -> None:
    """Ray actors receive the model pickled: a used module (with a live session) must travel."""
    import pickle

    loaded = load_external(
        _source({"onnx": {"path": str(_onnx(tmp_path / "m.onnx", net))}}),
        GRAY,
        role="embedding",
        dim=8,
        where="versions.1",
    )
    x = torch.rand(2, 1, 28, 28)
    first = loaded.module(x)
    again = pickle.loads(pickle.dumps(loaded.module))
    np.testing.assert_array_equal(again(x).numpy(), first.numpy())


@pytest.mark.parametrize("role", ["embedding", "side_info"])
def test_flavor_stores_the_graph_and_its_preprocessing(net: Net, tmp_path: Path, role: str) -> None:
    """The fct flavor logs the external graph as model.onnx (no re-export) and records the
    preprocessing that `fct embed` applies; the pyfunc's ONNX backend runs it."""
    import mlflow

    from fct_registry.registry.flavor import ONNX_FILE, flavor_conf, load_local, save_model

    loaded = load_external(
        _source({"onnx": {"path": str(_onnx(tmp_path / "m.onnx", net))}}),
        GRAY,
        role=role,
        dim=8,
        where="side_info" if role == "side_info" else "versions.1",
    )
    save_model(loaded.module, tmp_path / "model", spec=loaded.spec)
    assert (tmp_path / "model" / ONNX_FILE).read_bytes() == loaded.module.onnx_bytes
    conf = flavor_conf(tmp_path / "model")
    assert conf["preprocess"] == GRAY.model_dump(mode="json") and conf["kind"] == role
    x = torch.rand(3, 1, 28, 28)
    np.testing.assert_allclose(load_local(tmp_path / "model")(x).numpy(), _want(net, x), atol=1e-5)
    served = mlflow.pyfunc.load_model(str(tmp_path / "model")).predict({"images": x.numpy()})
    served = next(iter(served.values())) if isinstance(served, dict) else served
    np.testing.assert_allclose(np.asarray(served), _want(net, x), atol=1e-5)


def test_uint8_path_gives_the_same_bits_as_the_torch_path(net: Net, tmp_path: Path) -> None:
    """`fct embed` runs an external model on uint8 batches through `embed_uint8` (one
    onnxruntime call, scaled by NumPy): the same rows as the generic torch path, bit for bit."""
    from fct_registry.training.embed import CPU_FORWARD_BATCH, embed_images, embed_rows

    loaded = load_external(
        _source({"onnx": {"path": str(_onnx(tmp_path / "m.onnx", net))}}),
        GRAY,
        role="embedding",
        dim=8,
        where="versions.1",
    )
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (150, 1, 28, 28), dtype=torch.uint8, generator=gen)
    cpu = torch.device("cpu")
    want = embed_images(loaded.module, images, cpu, batch_size=CPU_FORWARD_BATCH).numpy()
    got = loaded.module.embed_uint8(images)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(embed_rows(loaded.module, images, cpu, 256), want)

import pytest
import torch

from fct_registry.errors import ConfigError
from fct_registry.models.backbones import BACKBONES
from fct_registry.models.embedding import EmbeddingModel
from fct_registry.models.io import build_from_spec, load_model, save_model
from fct_registry.models.transformations import TRANSFORMATIONS, TransformationChain


@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_backbone_contract(name, channels):
    kwargs = {"width": 4} if name == "smallcnn" else {}
    net = BACKBONES.build(name, in_channels=channels, **kwargs).eval()
    with torch.no_grad():
        out = net(torch.rand(2, channels, 28, 28))
    assert out.shape == (2, net.out_features)


def test_unknown_backbone_lists_known():
    with pytest.raises(ConfigError, match="known: resnet18, resnet50, smallcnn"):
        BACKBONES.build("vit", in_channels=1)


@pytest.mark.parametrize("kind", TRANSFORMATIONS.names())
@pytest.mark.parametrize("dims", [(128, 128, 128), (64, 32, 16), (16, 48, 32)])
def test_every_transformation_contract(kind, dims):
    old_dim, new_dim, side_dim = dims
    h = TRANSFORMATIONS.build(
        kind, old_dim=old_dim, new_dim=new_dim, side_info_dim=side_dim, hidden_dim=32
    ).eval()
    out = h(torch.randn(5, old_dim), torch.randn(5, side_dim))
    assert out.shape == (5, new_dim)


def test_no_side_info_variant_ignores_side_info():
    h = TRANSFORMATIONS.build(
        "fct-no-side-info", old_dim=8, new_dim=8, side_info_dim=4, hidden_dim=16
    ).eval()
    old = torch.randn(6, 8)
    assert torch.equal(h(old, torch.randn(6, 4)), h(old, torch.randn(6, 4)))


def test_side_info_changes_output():
    h = TRANSFORMATIONS.build("fct", old_dim=8, new_dim=8, side_info_dim=4, hidden_dim=16).eval()
    old = torch.randn(6, 8)
    assert not torch.allclose(h(old, torch.randn(6, 4)), h(old, torch.randn(6, 4)))


def test_chain_equals_hop_by_hop():
    hops = [
        TRANSFORMATIONS.build("fct", old_dim=8, new_dim=8, side_info_dim=4, hidden_dim=16).eval()
        for _ in range(3)
    ]
    chain = TransformationChain(hops).eval()
    old, side = torch.randn(5, 8), torch.randn(5, 4)
    expected = old
    for h in hops:
        expected = h(expected, side)
    assert torch.allclose(chain(old, side), expected)


def test_save_load_roundtrip(tmp_path):
    spec = {
        "kind": "embedding",
        "backbone": "smallcnn",
        "backbone_kwargs": {"width": 4},
        "in_channels": 1,
        "embedding_dim": 16,
        "num_classes": 10,
        "mean": [0.3],
        "std": [0.3],
    }
    model = build_from_spec(spec).eval()
    assert isinstance(model, EmbeddingModel)
    save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")
    x = torch.rand(3, 1, 28, 28)
    assert loaded_spec == spec
    assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob("m/*.pt")), "weights must be safetensors, never pickles"

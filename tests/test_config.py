import pytest

from fct_registry.config import load_params, parse_params
from fct_registry.errors import ConfigError
from fct_registry.stages.params import check_names


def test_default_params_load(default_raw_params):
    params = parse_params(default_raw_params)
    assert params.family == "fashion"
    assert list(params.versions) == [1, 2, 3]
    assert {(t.source, t.target) for t in params.transformations.values()} >= {
        (1, 2),
        (2, 3),
        (1, 3),
    }
    assert params.transformations["v1_to_v2"].kind == "fct"
    assert params.transformations["v1_to_v2_no_side_info"].kind == "fct-no-side-info"


def test_unknown_backbone_lists_known(default_raw_params):
    default_raw_params["versions"]["2"]["backbone"]["name"] = "resnet19"
    params = parse_params(default_raw_params)  # structure is fine; the name is checked later
    with pytest.raises(ConfigError) as err:
        check_names(params)
    msg = str(err.value)
    assert "versions.2.backbone.name" in msg
    assert "unknown backbone 'resnet19'" in msg
    assert "resnet18, resnet50, smallcnn" in msg


def test_edge_to_undeclared_version(default_raw_params):
    default_raw_params["transformations"]["v2_to_v3"]["to"] = 7
    with pytest.raises(
        ConfigError,
        match=r"names version 7, which is not declared; declared "
        r"versions: 1, 2, 3",
    ):
        parse_params(default_raw_params)


def test_backward_edge_rejected(default_raw_params):
    default_raw_params["transformations"]["v2_to_v3"].update({"from": 3, "to": 2})
    with pytest.raises(ConfigError, match="from < to"):
        parse_params(default_raw_params)


def test_typo_in_key_is_an_error(default_raw_params):
    default_raw_params["versions"]["1"]["optim"]["epoch"] = 3
    with pytest.raises(ConfigError, match=r"versions\.1\.optim\.epoch.*Extra inputs"):
        parse_params(default_raw_params)


def test_unknown_transformation_kind(default_raw_params):
    default_raw_params["transformations"]["v1_to_v2"]["kind"] = "mlp"
    with pytest.raises(
        ConfigError, match=r"transformations\.v1_to_v2\.kind: .*known: fct, fct-no-side-info"
    ):
        check_names(parse_params(default_raw_params))


def test_unknown_dataset_and_every_unknown_name_reported_at_once(default_raw_params):
    default_raw_params["data"]["dataset"] = "mnist"
    default_raw_params["side_info"]["backbone"]["name"] = "vit"
    with pytest.raises(ConfigError) as err:
        check_names(parse_params(default_raw_params))
    msg = str(err.value)
    assert "data.dataset: unknown dataset 'mnist'" in msg
    assert "side_info.backbone.name: unknown backbone 'vit'" in msg


def test_default_params_name_known_builders(default_raw_params):
    params = parse_params(default_raw_params)
    assert check_names(params) is params


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_gpu_profile_is_valid():
    from tests.conftest import ROOT

    params = load_params(ROOT / "params-cifar100-gpu.yaml")
    assert params.versions[1].backbone.name == "resnet50"
    assert len(params.versions[1].classes) == 50 and params.versions[2].classes is None
    assert params.versions[1].embedding_dim == 128


@pytest.mark.parametrize("section", ["transformations", "bct"])
def test_keys_dvc_cannot_address_are_refused(default_raw_params, section):
    entries = default_raw_params[section]
    entries["1-2"] = entries.pop("v1_to_v2")
    with pytest.raises(ConfigError, match=r"cannot be addressed by `dvc exp run -S`.*v1_to_v2"):
        parse_params(default_raw_params)

"""Typed model specs: ``spec.json`` keeps its bytes, bad specs fail with one line naming the
field, and models are built only from a spec."""

from __future__ import annotations

import json

import pytest

from fct_registry.config import SideInfoConfig, TransformationConfig, VersionConfig
from fct_registry.errors import DataError
from fct_registry.model_specs import EmbeddingSpec, TransformationSpec, parse_spec
from fct_registry.models.embedding import EmbeddingModel, SideInfoModel
from fct_registry.models.io import SPEC_FILE, build_from_spec, load_spec, save_model
from fct_registry.training.classifier import embedding_spec
from fct_registry.training.contrastive import side_info_spec
from fct_registry.training.transformation import transformation_spec

STREAMED = {  # data/info.json of a split streamed from image files
    "shape": [3, 32, 32],
    "classes": ["a", "b", "c"],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "transform": {"channels": 3, "resize": 36, "crop": 32, "colour": None},
}


def test_embedding_spec_json_is_what_the_dict_spec_wrote(tmp_path):
    """The object the untyped spec stored, written out literally: tracked spec.json files
    must keep their bytes (``preprocess`` present only for streamed splits)."""
    cfg = VersionConfig(embedding_dim=16, backbone={"name": "smallcnn", "kwargs": {"width": 4}})
    spec = embedding_spec(cfg, STREAMED) | {"family": "fam", "version": 2}
    expected = {
        "kind": "embedding",
        "backbone": "smallcnn",
        "backbone_kwargs": {"width": 4},
        "in_channels": 3,
        "input_shape": [3, 32, 32],
        "embedding_dim": 16,
        "num_classes": 3,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "preprocess": STREAMED["transform"],
        "family": "fam",
        "version": 2,
    }
    save_model(build_from_spec(spec), spec, tmp_path)
    assert (tmp_path / SPEC_FILE).read_text() == json.dumps(expected, indent=2, sort_keys=True)
    in_memory = {k: v for k, v in STREAMED.items() if k != "transform"}
    assert "preprocess" not in embedding_spec(cfg, in_memory).to_dict()
    assert parse_spec(load_spec(tmp_path)) == spec


def test_side_info_and_transformation_specs_round_trip():
    side = side_info_spec(SideInfoConfig(dim=8, projection_dim=4), STREAMED)
    assert isinstance(build_from_spec(side.to_dict()), SideInfoModel)
    cfg = TransformationConfig.model_validate({"from": 1, "to": 2, "kind": "fct-no-side-info"})
    h = transformation_spec(cfg, 8, 6, 4) | {"seed": 3}
    data = h.to_dict()
    assert (data["from"], data["to"], data["side_info_dim"], data["seed"]) == (1, 2, 0, 3)
    assert parse_spec(data) == h


def test_a_spec_missing_a_field_fails_with_one_line_naming_it():
    spec = embedding_spec(VersionConfig(), STREAMED).to_dict()
    del spec["num_classes"]
    with pytest.raises(DataError, match=r"spec is invalid at num_classes.*re-") as e:
        build_from_spec(spec)
    assert "\n" not in str(e.value)


def test_a_wrongly_typed_field_is_refused_not_passed_on():
    spec = {"kind": "transformation", "type": "fct", "old_dim": "wide", "new_dim": 6}
    with pytest.raises(DataError, match="old_dim"):
        build_from_spec(spec | {"side_info_dim": 4, "hidden_dim": 8})


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(DataError, match="expected embedding, side_info or transformation"):
        build_from_spec({"kind": "tokenizer"})


def test_typed_fields_replace_string_keys():
    spec = EmbeddingSpec(
        backbone="smallcnn", in_channels=1, embedding_dim=8, num_classes=2, mean=[0.5], std=[0.5]
    )
    assert spec.sizes == (8, 2) and spec.kind == "embedding"
    assert isinstance(build_from_spec(spec), EmbeddingModel)
    with pytest.raises(ValueError, match="hidden_dim"):
        TransformationSpec(type="fct", old_dim=8, new_dim=6, side_info_dim=4)

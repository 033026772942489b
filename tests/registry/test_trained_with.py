"""The side-info version page says which version's data the extractor was trained on."""

from fct_registry.registry import description as descriptions
from fct_registry.registry import tags as fct_tags


def test_side_info_page_shows_trained_with():
    page = descriptions.side_info_description(
        "fam", 1, {fct_tags.EMBEDDING_DIM: "128", fct_tags.TRAINED_WITH: "1"}, readers=[]
    )
    assert "params version `1`'s training images only" in page
    whole = descriptions.side_info_description(
        "fam", 1, {fct_tags.EMBEDDING_DIM: "128", fct_tags.TRAINED_WITH: "all"}, readers=[]
    )
    assert "training images only" not in whole

"""The side-info version page says which version's data the extractor was trained on."""

from fct_registry.registry import description as D
from fct_registry.registry import tags as T


def test_side_info_page_shows_trained_with():
    page = D.side_info_description(
        "fam", 1, {T.EMBEDDING_DIM: "128", T.TRAINED_WITH: "1"}, readers=[]
    )
    assert "params version `1`'s training images only" in page
    whole = D.side_info_description(
        "fam", 1, {T.EMBEDDING_DIM: "128", T.TRAINED_WITH: "all"}, readers=[]
    )
    assert "training images only" not in whole

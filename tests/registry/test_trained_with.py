"""The side-info version page says which version's data the extractor was trained on."""

from fct_registry.registry import description as D
from fct_registry.registry import tags as T


def test_side_info_page_shows_trained_with():
    page = D.side_info_description(
        "fam", 1, {T.EMBEDDING_DIM: "128", T.TRAINED_WITH: "1"}, readers=[]
    )
    assert "Trained only on the training images of params version `1`" in page
    whole = D.side_info_description(
        "fam", 1, {T.EMBEDDING_DIM: "128", T.TRAINED_WITH: "all"}, readers=[]
    )
    assert "Trained only" not in whole

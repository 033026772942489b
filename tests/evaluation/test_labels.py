"""Labels compared by class name: ``align_labels`` against a plain loop over names, and each
refusal (one side named, a name twice, an id without a name) with both lists in the message."""

from __future__ import annotations

import numpy as np
import pytest

from fct_registry.errors import DataError
from fct_registry.evaluation.labels import align_labels, class_names, labels_from_array

NAMES = ("Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker", "T-shirt")


def _naive(
    q: np.ndarray, qc: tuple[str, ...], g: np.ndarray, gc: tuple[str, ...]
) -> tuple[list[int], list[int], list[str]]:
    """Gallery names first, then the query-only names; each id looked up one by one."""
    union = list(gc)
    for name in qc:
        if name not in union:
            union.append(name)
    return (
        [-1 if i < 0 else union.index(qc[i]) for i in q.tolist()],
        [-1 if i < 0 else union.index(gc[i]) for i in g.tolist()],
        union,
    )


@pytest.mark.parametrize("seed", range(8))
def test_matches_a_loop_over_names(seed: int) -> None:
    rng = np.random.default_rng(seed)
    gc = tuple(rng.permutation(NAMES)[: rng.integers(3, 8)].tolist())  # each side its own order
    qc = tuple(rng.permutation(NAMES)[: rng.integers(3, 8)].tolist())
    q = rng.integers(-1, len(qc), 50)  # -1: an item without a label
    g = rng.integers(-1, len(gc), 70)
    qa, ga, union = align_labels(q, qc, g, gc)
    want_q, want_g, want_union = _naive(q, qc, g, gc)
    assert qa.tolist() == want_q and ga.tolist() == want_g and list(union) == want_union
    assert qa.dtype == ga.dtype == np.int64
    # what the metrics rely on: between labelled items, equal aligned ids <=> equal class names
    same = (qa[:, None] == ga[None, :]) & (qa[:, None] >= 0)
    by_name = [[i >= 0 and j >= 0 and qc[i] == gc[j] for j in g.tolist()] for i in q.tolist()]
    assert same.tolist() == by_name
    assert ((qa < 0) == (q < 0)).all() and ((ga < 0) == (g < 0)).all()  # no label stays -1


def test_a_class_missing_in_the_query_folder() -> None:
    """The issue's case: the query tree has no Shirt/, so its ids after Shirt shift by one."""
    gallery_classes = ("Coat", "Shirt", "Sneaker")
    query_classes = ("Coat", "Sneaker")
    q, g, union = align_labels(
        np.array([0, 1]), query_classes, np.array([0, 1, 2]), gallery_classes
    )
    assert q.tolist() == [0, 2] and g.tolist() == [0, 1, 2] and union == gallery_classes
    # and a class only the queries have gets an id no gallery item has
    q, _, union = align_labels(np.array([0, 1]), ("Bag", "Coat"), np.array([0]), ("Coat",))
    assert union == ("Coat", "Bag") and q.tolist() == [1, 0]


def test_without_names_the_ids_are_compared_as_they_are() -> None:
    q, g, union = align_labels(np.array([3, 1], np.int32), None, np.array([1, 7]), None)
    assert q.tolist() == [3, 1] and g.tolist() == [1, 7] and union is None
    assert q.dtype == np.int64


def test_one_side_without_names_is_refused_naming_both_lists() -> None:
    with pytest.raises(DataError) as info:
        align_labels(np.array([0]), None, np.array([0]), ("Coat", "Shirt"), query_name="Q")
    message = str(info.value)
    assert "class names on one side only (names: the gallery; ids only: Q)" in message
    assert "Q: ids only, no names; the gallery: ['Coat', 'Shirt']" in message
    assert "class-name strings" in message and "\n" not in message
    with pytest.raises(DataError, match=r"names: Q; ids only: the gallery"):
        align_labels(np.array([0]), ("Coat",), np.array([0]), None, query_name="Q")


def test_a_name_twice_is_refused() -> None:
    with pytest.raises(
        DataError,
        match=r"class 'Coat' appears more than once in the class list of the gallery.*'Bag'",
    ):
        align_labels(np.array([0]), ("Bag",), np.array([0]), ("Coat", "Shirt", "Coat"))


def test_an_id_without_a_name_is_refused_with_both_lists() -> None:
    with pytest.raises(DataError) as info:
        align_labels(np.array([0, 3]), ("Coat", "Shirt"), np.array([0]), ("Coat",))
    message = str(info.value)
    assert "class id 3 of the queries has no name: its class list has 2 (ids 0..1)" in message
    assert "the queries: ['Coat', 'Shirt']; the gallery: ['Coat']" in message


def test_long_lists_are_shortened_in_messages() -> None:
    many = tuple(f"c{i}" for i in range(100))
    with pytest.raises(DataError, match=r"'c5', \.\.\. \(100 in all\)\]") as info:
        align_labels(np.array([0]), None, np.array([0]), many)
    assert "'c6'" not in str(info.value)


def test_labels_from_arrays() -> None:
    ints = labels_from_array(np.array([2, 0], np.int32), "L")
    assert ints.ids.tolist() == [2, 0] and ints.classes is None
    names = labels_from_array(np.array(["Shirt", "Coat", "Shirt"]), "L")
    assert names.ids.tolist() == [1, 0, 1] and names.classes == ("Coat", "Shirt")
    raw = labels_from_array(np.array([b"Shirt", b"Coat"]), "L")
    assert raw.classes == ("Coat", "Shirt") and raw.ids.tolist() == [1, 0]
    with pytest.raises(DataError, match=r"L holds float64 values; labels are integer class ids"):
        labels_from_array(np.array([0.5]), "L")


def test_recorded_class_lists() -> None:
    assert class_names(["a", "b"], "X", "fix") == ("a", "b")
    assert class_names(None, "X", "fix") is None and class_names([], "X", "fix") is None
    with pytest.raises(DataError, match=r"X is not a list of class names .*; fix it"):
        class_names({"a": 1}, "X", "fix it")
    with pytest.raises(DataError, match=r"X is not a list of class names"):
        class_names(["a", 3], "X", "fix")

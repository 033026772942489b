"""Class labels compared by name: two labelled sets whose integer ids index different class lists.

An ImageFolder tree numbers its classes by sorted folder name, so a query tree without ``Shirt/``
shifts every later id by one, and comparing raw ids then scores ``Sneaker`` queries against
``Shirt`` gallery items without any warning. Each side's ids index its own list of names
(``classes[i]`` names id ``i``); :func:`align_labels` maps both onto one list, the union of the
names: the gallery's list first, so the gallery's stored ids keep their meaning, then the names
only the queries have, in the queries' order.

* Both sides name their classes: aligned by name. A class missing on one side is fine: its items
  have no same-class item on the other side (retrieval metrics skip such queries).
* Neither side does: the ids are compared as they are (both index the same list, e.g. the
  pipeline's own prepared tensors).
* Only one side does, a list names a class twice, or an id has no name in its list: refused
  (:class:`~fct_registry.errors.DataError`) with both lists named, since a guess would silently
  score the wrong pairs.

Negative ids (``-1``: no label) stay ``-1``. Pure numpy, no torch: galleries import it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fct_registry.errors import DataError

Classes = tuple[str, ...]
SHOWN = 6  # names shown per list in an error message


class Labels(NamedTuple):
    """Integer class ids and, when known, the class names they index (``classes[i]`` is id i)."""

    ids: np.ndarray
    classes: Classes | None


def class_names(raw: object, where: str, fix: str) -> Classes | None:
    """A recorded class list as a tuple of names; None when none (or an empty one) is recorded."""
    if raw is None or (isinstance(raw, list | tuple) and not raw):
        return None
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) for n in raw):
        raise DataError(f"{where} is not a list of class names (got {str(raw)[:80]!r}); {fix}")
    return tuple(raw)


def labels_from_array(array: np.ndarray, where: str) -> Labels:
    """Labels read from a file: integer class ids (no names), or class names as strings, which
    become ids into their sorted unique names."""
    if array.dtype.kind in "US":
        names, ids = np.unique(array.reshape(-1), return_inverse=True)
        if array.dtype.kind == "S":
            names = [n.decode("utf-8", errors="replace") for n in names]
        return Labels(ids.reshape(array.shape).astype(np.int64), tuple(str(n) for n in names))
    if array.dtype.kind not in "iu":
        raise DataError(
            f"{where} holds {array.dtype} values; labels are integer class ids or class names "
            "(strings): save them with numpy.save from an int or str array"
        )
    return Labels(array.astype(np.int64), None)


def align_labels(
    query_labels: np.ndarray,
    query_classes: Sequence[str] | None,
    gallery_labels: np.ndarray,
    gallery_classes: Sequence[str] | None,
    *,
    query_name: str = "the queries",
    gallery_name: str = "the gallery",
) -> tuple[np.ndarray, np.ndarray, Classes | None]:
    """Both sides' ids mapped onto one class list: ``(query ids, gallery ids, union of names)``.

    Equal aligned ids mean the same class name. Without names on either side the ids come back
    unchanged (as int64) and the union is None. See the module docstring for what is refused.
    """
    q = np.asarray(query_labels, dtype=np.int64)
    g = np.asarray(gallery_labels, dtype=np.int64)
    if query_classes is None and gallery_classes is None:
        return q, g, None
    lists = f"{query_name}: {_listing(query_classes)}; {gallery_name}: {_listing(gallery_classes)}"
    if query_classes is None or gallery_classes is None:
        named, bare = (
            (gallery_name, query_name) if query_classes is None else (query_name, gallery_name)
        )
        raise DataError(
            f"class names on one side only (names: {named}; ids only: {bare}), so the ids "
            f"cannot be matched by name ({lists}); give {bare} class names: re-index its "
            "images with `fct embed` from a source that records them (an ImageFolder tree, a "
            "prepared split), or save .npy labels as class-name strings"
        )
    query_classes, gallery_classes = tuple(query_classes), tuple(gallery_classes)
    for name, classes in ((query_name, query_classes), (gallery_name, gallery_classes)):
        twice = _duplicates(classes)
        if twice:
            raise DataError(
                f"class {twice[0]!r} appears more than once in the class list of {name}, so "
                f"its ids cannot be matched by name ({lists}); give each class one name "
                "(re-index from a tree with one folder per class)"
            )
    known = set(gallery_classes)
    union = gallery_classes + tuple(n for n in query_classes if n not in known)
    index = {n: i for i, n in enumerate(union)}
    query_lut = np.array([index[n] for n in query_classes], dtype=np.int64)
    gallery_lut = np.arange(len(gallery_classes), dtype=np.int64)
    return (
        _lookup(q, query_lut, query_name, lists),
        _lookup(g, gallery_lut, gallery_name, lists),
        union,
    )


def _lookup(ids: np.ndarray, lut: np.ndarray, name: str, lists: str) -> np.ndarray:
    """``lut[ids]``, negative ids (no label) kept as -1; an id past the names is refused."""
    over = ids >= len(lut)
    if over.any():
        raise DataError(
            f"class id {int(ids[over].max())} of {name} has no name: its class list has "
            f"{len(lut)} (ids 0..{len(lut) - 1}), so the ids cannot be aligned ({lists}); the "
            "labels and the class list come from different sources: re-index the images with "
            "`fct embed`"
        )
    out = np.full(ids.shape, -1, dtype=np.int64)
    known = ids >= 0
    out[known] = lut[ids[known]]
    return out


def _duplicates(classes: Classes) -> list[str]:
    return [n for n, count in Counter(classes).items() if count > 1]


def _listing(classes: Sequence[str] | None) -> str:
    if classes is None:
        return "ids only, no names"
    shown = ", ".join(repr(n) for n in classes[:SHOWN])
    more = f", ... ({len(classes)} in all)" if len(classes) > SHOWN else ""
    return f"[{shown}{more}]"

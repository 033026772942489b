"""``fct backfill run`` rewrites rows and the manifest: the class names the labels index stay."""

from __future__ import annotations

from fct_registry.backfill import Budget, make_plan, run_backfill
from fct_registry.gallery import Gallery
from tests.gallery.named_galleries import with_classes


def test_a_backfilled_gallery_keeps_its_class_names(setup) -> None:
    with_classes(setup.gallery, ("Coat", "Shirt", "Sneaker"))
    plan = make_plan(Gallery.open(setup.gallery), Budget.parse("20%"), images=str(setup.images))
    run_backfill(plan, setup.embed, model_id="m")
    manifest = Gallery.open(setup.gallery).manifest
    assert manifest.provenance["backfills"] and manifest.classes == ("Coat", "Shirt", "Sneaker")

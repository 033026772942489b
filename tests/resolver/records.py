"""Registry records for tests: what ``search_model_versions`` returns, without a server."""

from __future__ import annotations

from dataclasses import dataclass, field

from fct_registry.registry import tags as fct_tags

FAMILY = "fashion"
SIDE = "fashion-side-info/1"
OTHER_SIDE = "fashion-side-info/2"
TRANSFORMS = fct_tags.transformations_model_name(FAMILY)
MEASURED_BY = "0123456789abcdef0123456789abcdef"  # the run id the tool writes beside fct.top1


@dataclass
class Record:
    """Duck-types ``mlflow.entities.model_registry.ModelVersion``."""

    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "READY"


def emb(version: int, side_info: str | None = SIDE, family: str = FAMILY) -> Record:
    tags = {fct_tags.ROLE: fct_tags.ROLE_EMBEDDING, fct_tags.EMBEDDING_DIM: "8"}
    if side_info:
        tags[fct_tags.SIDE_INFO] = side_info
    return Record(family, str(version), tags)


def side(version: int, family: str = FAMILY) -> Record:
    return Record(
        fct_tags.side_info_model_name(family),
        str(version),
        {fct_tags.ROLE: fct_tags.ROLE_SIDE_INFO},
    )


def tr(
    version: int,
    source: int,
    target: int,
    top1: float | None,
    side_info: str | None = SIDE,
    kind: str = "fct",
    family: str = FAMILY,
) -> Record:
    tags = {
        fct_tags.ROLE: fct_tags.ROLE_TRANSFORMATION,
        fct_tags.SOURCE: str(source),
        fct_tags.TARGET: str(target),
    }
    tags[fct_tags.KIND] = kind
    if top1 is not None:
        tags |= {
            fct_tags.TOP1: str(top1),
            fct_tags.TOP5: str(min(100.0, top1 + 5)),
            fct_tags.MAP: str(top1 - 10),
        }
        tags[fct_tags.MEASURED_RUN] = MEASURED_BY
    if side_info:
        tags[fct_tags.SIDE_INFO] = side_info
    return Record(fct_tags.transformations_model_name(family), str(version), tags)


def chain(
    version: int,
    hops: list[int],
    source: int,
    target: int,
    top1: float,
    side_info: str | None = SIDE,
    family: str = FAMILY,
) -> Record:
    tags = {
        fct_tags.ROLE: fct_tags.ROLE_CHAIN,
        fct_tags.SOURCE: str(source),
        fct_tags.TARGET: str(target),
        fct_tags.HOPS: ",".join(map(str, hops)),
        fct_tags.TOP1: str(top1),
        fct_tags.MEASURED_RUN: MEASURED_BY,
    }
    if side_info:
        tags[fct_tags.SIDE_INFO] = side_info
    return Record(fct_tags.transformations_model_name(family), str(version), tags)


def default_family(direct: float = 78.0, first: float = 90.0, second: float = 88.0) -> list[Record]:
    """The pipeline's default family: 1->2, 2->3, 1->3 and a 1->2 without side-info."""
    return [
        emb(1),
        emb(2),
        emb(3),
        side(1),
        tr(1, 1, 2, first),
        tr(2, 2, 3, second),
        tr(3, 1, 3, direct),
        tr(4, 1, 2, 70.0, side_info=None, kind="fct-no-side-info"),
    ]

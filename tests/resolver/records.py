"""Registry records for tests: what ``search_model_versions`` returns, without a server."""

from __future__ import annotations

from dataclasses import dataclass, field

from fct_registry.registry import tags as T

FAMILY = "fashion"
SIDE = "fashion-side-info/1"
OTHER_SIDE = "fashion-side-info/2"
TRANSFORMS = T.transformations_model_name(FAMILY)
MEASURED_BY = "0123456789abcdef0123456789abcdef"  # the run id the tool writes beside fct.top1


@dataclass
class Record:
    """Duck-types ``mlflow.entities.model_registry.ModelVersion``."""

    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "READY"


def emb(version: int, side_info: str | None = SIDE, family: str = FAMILY) -> Record:
    tags = {T.ROLE: T.ROLE_EMBEDDING, T.EMBEDDING_DIM: "8"}
    if side_info:
        tags[T.SIDE_INFO] = side_info
    return Record(family, str(version), tags)


def side(version: int, family: str = FAMILY) -> Record:
    return Record(T.side_info_model_name(family), str(version), {T.ROLE: T.ROLE_SIDE_INFO})


def tr(
    version: int,
    source: int,
    target: int,
    top1: float | None,
    side_info: str | None = SIDE,
    kind: str = "fct",
    family: str = FAMILY,
) -> Record:
    tags = {T.ROLE: T.ROLE_TRANSFORMATION, T.SOURCE: str(source), T.TARGET: str(target)}
    tags[T.KIND] = kind
    if top1 is not None:
        tags |= {T.TOP1: str(top1), T.TOP5: str(min(100.0, top1 + 5)), T.MAP: str(top1 - 10)}
        tags[T.MEASURED_RUN] = MEASURED_BY
    if side_info:
        tags[T.SIDE_INFO] = side_info
    return Record(T.transformations_model_name(family), str(version), tags)


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
        T.ROLE: T.ROLE_CHAIN,
        T.SOURCE: str(source),
        T.TARGET: str(target),
        T.HOPS: ",".join(map(str, hops)),
        T.TOP1: str(top1),
        T.MEASURED_RUN: MEASURED_BY,
    }
    if side_info:
        tags[T.SIDE_INFO] = side_info
    return Record(T.transformations_model_name(family), str(version), tags)


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

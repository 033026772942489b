"""WebDataset-style tar shards: the ``tar`` image source, and reading members back by name.

A shard holds members ``<key>.<ext>`` grouped by key (the item's id): the image is the member
with an image suffix, the label a ``.cls``/``.label`` member holding an integer. Shards are local
files or S3 objects; :func:`members` reads one front to back once (seeking over member data when
the file is local), and :class:`TarMembers` indexes each shard's member offsets once, then reads
members by range: how a backfill or side-info pass finds ``SHARD.tar#MEMBER`` again.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import IO

from fct_registry.data.base_image_source import SOURCES, ImageSource, Item, UniqueIds, open_root
from fct_registry.data.decode import is_image_name
from fct_registry.errors import DataError
from fct_registry.storage import Storage, open_storage

LABEL_SUFFIXES = (".cls", ".label")


def shard_storage(shard: str) -> tuple[Storage, str]:
    """The folder or prefix holding the shard, and the shard's name in it."""
    folder, _, name = shard.rpartition("/")
    return open_storage(folder or "."), name


def members(
    location: Storage, name: str, shard: str
) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    """Every file member of the shard, in order, with a reader of its data (valid until the next
    member is asked for). A missing, unreadable, corrupt or truncated shard is a DataError
    naming it."""
    try:
        stream = location.open(name)
    except DataError as exc:  # StorageError, NotFoundError
        raise DataError(f"tar shard {shard} does not exist or cannot be read: {exc}") from None
    try:
        try:
            seekable = bool(stream.seekable())
        except (AttributeError, OSError, ValueError):
            seekable = False
        # A local file seeks over member data; an S3 body is read front to back once.
        with tarfile.open(fileobj=stream, mode="r:*" if seekable else "r|*") as tar:
            for member in tar:
                if member.isfile():
                    reader = tar.extractfile(member)
                    assert reader is not None  # a regular file always has one
                    yield member, reader
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"tar shard {shard} is corrupt or truncated ({exc}); re-create or re-download it"
        ) from None
    finally:
        stream.close()


class TarMembers:
    """Members of tar shards read by name: each shard's ``member -> (offset, size)`` is indexed
    in one pass over it, the first time it is asked for; members are then read by range."""

    def __init__(self) -> None:
        self._shards: dict[str, tuple[Storage, str, dict[str, tuple[int, int]]]] = {}

    def read(self, shard: str, member: str) -> bytes:
        if shard not in self._shards:
            location, name = shard_storage(shard)
            index = {m.name: (m.offset_data, m.size) for m, _ in members(location, name, shard)}
            self._shards[shard] = (location, name, index)
        location, name, index = self._shards[shard]
        if member not in index:
            raise DataError(f"tar shard {shard} has no member {member!r}")
        return location.read_range(name, *index[member])


def expand_braces(pattern: str) -> list[str]:
    """WebDataset's ``shard-{000..009}.tar`` notation: one numeric range, zero-padded."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    lo, hi = match.group(1), match.group(2)
    width = len(lo)
    return [
        pattern[: match.start()] + f"{i:0{width}d}" + pattern[match.end() :]
        for i in range(int(lo), int(hi) + 1)
    ]


@SOURCES.register("tar")
class TarShardsSource(ImageSource):
    """WebDataset-style shards (module docstring), read front to back; ids are the keys."""

    kind = "tar"

    def __init__(self, uris: str | Sequence[str]) -> None:
        raw = [uris] if isinstance(uris, str) else list(uris)
        shards: list[str] = []
        for uri in raw:
            if uri.endswith(".tar") or "{" in uri:
                shards += expand_braces(uri)
            else:  # a folder or prefix of shards
                location = open_root(uri)[0]
                shards += [location.join(n) for n in location.walk() if n.endswith(".tar")]
        if not shards:
            raise DataError(f"no .tar shards found in {', '.join(raw)}")
        self.shards = shards
        self.uri = shards[0] if len(shards) == 1 else f"{shards[0]} (+{len(shards) - 1} shards)"
        self._locations = {shard: shard_storage(shard)[0] for shard in shards}
        first = next(self.items(), None)
        if first is None:
            raise DataError(f"the tar shards {self.uri} hold no images")
        self._labels = first.label is not None

    @property
    def has_labels(self) -> bool:
        return self._labels

    def items(self) -> Iterator[Item]:
        unique = UniqueIds(self.uri)
        for shard in self.shards:
            for item in self._shard_items(shard):
                unique.add(item.id, f"shard {shard}")
                yield item

    def _shard_items(self, shard: str) -> Iterator[Item]:
        key, image, label = None, None, None
        for member, reader in members(self._locations[shard], shard.rpartition("/")[2], shard):
            path = PurePosixPath(member.name)
            stem = str(path.parent / path.name.split(".", 1)[0])
            if stem != key:
                if image is not None:
                    yield self._item(shard, key, image, label)
                key, image, label = stem, None, None
            if is_image_name(member.name):
                image = (member.name, reader.read(), member.offset_data, member.size)
            elif member.name.endswith(LABEL_SUFFIXES):
                label = _parse_label(reader.read(), shard, member.name)
        if image is not None:
            yield self._item(shard, key, image, label)

    def _item(self, shard: str, key: str | None, image: tuple, label: int | None) -> Item:
        member, data, offset, size = image
        return Item(
            str(key), f"{shard}#{member}", label, shard, data=data, offset=offset, size=size
        )

    def read(self, item: Item) -> bytes:
        if item.data is not None:
            return item.data
        location = self._locations[item.name]
        return location.read_range(item.name.rpartition("/")[2], item.offset, item.size)


def _parse_label(raw: bytes, shard: str, member: str) -> int:
    try:
        return int(raw.decode().strip())
    except ValueError:
        raise DataError(f"{shard}: {member} holds {raw[:20]!r}, not an integer class id") from None

"""A Zarr output written straight to object storage, its metadata last.

Object storage has no rename, so a Zarr output there cannot be built under a temporary
name and renamed as on disk.  :class:`MetadataLastStore` wraps the bucket's store
(``FsspecStore``): chunks go to the bucket as they are written, every ``zarr.json`` is
held in memory until :meth:`MetadataLastStore.flush`, which writes the arrays' metadata
and then the root's (consolidated) last.  Until then there is no ``zarr.json`` at the
root: no reader opens the store, ``zssr`` treats the prefix as no output, and an
aborted writer deletes what it uploaded (:func:`discard`).  The chunks never pass
through a local file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from .errors import WriteError

__all__ = ["MetadataLastStore", "open_metadata_last", "discard", "remote_target", "METADATA"]

METADATA = "zarr.json"


def _is_metadata(key: str) -> bool:
    return key == METADATA or key.endswith("/" + METADATA)


class MetadataLastStore(WrapperStore):
    """Chunks through to the wrapped store; ``zarr.json`` documents held until
    :meth:`flush` (see the module doc)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.held: dict[str, Buffer] = {}

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        if key in self.held:
            if byte_range is not None:  # zarr reads metadata whole; never expected
                raise NotImplementedError(f"{key}: a byte range of held metadata")
            return prototype.buffer.from_bytes(self.held[key].to_bytes())
        if _is_metadata(key):  # not written yet: none (an older store there is not read)
            return None
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]
                                 ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        if _is_metadata(key):
            return key in self.held
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        if _is_metadata(key):
            self.held[key] = value
            return
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not await self.exists(key):
            await self.set(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self.held.pop(key, None)
        if not _is_metadata(key):
            await self._store.delete(key)

    async def list(self) -> AsyncIterator[str]:
        async for key in self.list_prefix(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        seen = set()
        async for key in self._store.list_prefix(prefix):
            if not _is_metadata(key):
                seen.add(key)
                yield key
        for key in sorted(self.held):
            if key.startswith(prefix) and key not in seen:
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/") + "/" if prefix else ""
        seen = set()
        async for name in self._store.list_dir(prefix):
            if name != METADATA:
                seen.add(name)
                yield name
        for key in sorted(self.held):
            if key.startswith(base):
                child = key[len(base):].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child

    async def flush(self) -> None:
        """Write the held metadata: the deepest first, the root's last."""
        for key in sorted(self.held, key=lambda k: (-k.count("/"), k)):
            if key != METADATA:
                await self._store.set(key, self.held[key])
        if METADATA in self.held:
            await self._store.set(METADATA, self.held[METADATA])
        self.held.clear()


def open_metadata_last(url: str) -> MetadataLastStore:
    """A :class:`MetadataLastStore` on a writable ``FsspecStore`` at ``url``."""
    from zarr.storage import FsspecStore

    from .fetch import _options

    return MetadataLastStore(FsspecStore.from_url(url.rstrip("/"), read_only=False,
                                                  storage_options=_options(url)))


def discard(url: str) -> None:
    """Delete every object under the prefix ``url`` (an aborted or replaced store): the
    root's ``zarr.json`` first, so no reader opens a store while it goes."""
    from .s3_objects import delete_object, delete_under, join_url

    delete_object(join_url(url, METADATA))
    delete_under(url)


def remote_target(url: str, *, overwrite: bool) -> Any:
    """The store a Zarr output on object storage is written through; an existing store
    there is replaced only with ``overwrite`` and only when zssr wrote it (its root
    metadata names zssr), and goes before the new one is written."""
    from .s3_objects import get_bytes, join_url
    from .zarr_reader import OURS

    got = get_bytes(join_url(url, "zarr.json"))
    if got is not None:
        if not overwrite:
            raise WriteError(f"{url}: output exists; pass --overwrite to replace it")
        try:
            ours = OURS in json.loads(got[0]).get("attributes", {})
        except (ValueError, AttributeError):
            ours = False
        if not ours:
            raise WriteError(f"{url}: a Zarr store zssr did not write; refusing to replace "
                             "it whatever --overwrite says")
        discard(url)
    return open_metadata_last(url)

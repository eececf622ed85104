"""What identifies an image of a run: its input's content and the settings that shape
its result, as a key ``<name>-<12 hex>`` (:func:`image_key`).  A changed input, config,
scale or tiling gives a new key, so results never mix (:mod:`pipeline.runs.rundir`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from io_adapters.objstore import object_identity
from io_adapters.s3_objects import is_remote
from io_adapters.vsi import display_url, is_vsi

__all__ = ["input_identity", "image_key", "SMALL_FILE"]

SMALL_FILE = 4 << 20  # files up to this size are identified by their content


def input_identity(path: Path) -> dict[str, Any]:
    """What identifies an input's content: path + size + mtime, or a small file's hash.

    A folder (DICOM series, Zarr store) is identified by the names, sizes and
    modification times of the files in it; an ``s3://`` object by its size and ETag, other
    URLs by the URL alone (a changed object there is not noticed: use a new --out).
    """
    if is_vsi(path):
        url = display_url(path)
        return object_identity(url) if is_remote(url) else {"url": url}
    path = Path(path).resolve()
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {"path": str(path), "listing": h.hexdigest()}
    st = path.stat()
    if st.st_size <= SMALL_FILE:
        return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def image_key(name: str, identity: dict[str, Any], settings: dict[str, Any]) -> str:
    """``<name>-<12 hex>`` from the input identity and everything that shapes the result."""
    blob = json.dumps({"input": identity, "settings": settings}, sort_keys=True, default=str)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{safe}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

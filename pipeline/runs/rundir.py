"""The run directory (``zssr run --out DIR``): manifest, config, weights, tile markers, lock.

Layout::

    DIR/.lock                   fcntl lock: one run at a time on DIR
    DIR/manifest.jsonl          append-only: one JSON line per image and state
    DIR/config.yaml             the resolved config of the latest run
    DIR/log.jsonl               structured log lines
    DIR/weights/<key>_s<i>.pt   trained weights + normaliser + history of step i
    DIR/kernels/<key>.npz       --kernel estimate: the image's kernel choice
    DIR/kernels/<key>.npy       ... its kernel alone (none for bicubic), for --kernel FILE.npy
    (kernel_groups: weights/<key>_s0_g<j>.pt and kernels/<key>_g<j>.npz of each group j)
    DIR/work/<key>/s<i>.zarr    the step's super-resolved image (working Zarr)
    DIR/tiles/<key>/s<i>/f<frame>_t<tile>.done   one marker per finished tile
    DIR/entries/<key>.json      the image's report entry
    DIR/report_assets/          crops and curves (PNG)
    DIR/outputs/                final images
    DIR/claims/<hash>.json      the key that last began committing each output
    DIR/report.json, report.html

An image *key* is ``<name>-<hash>``: the hash covers the input's identity
(path + size + modification time, or the content of a small file), the
resolved config, the scale and the tiling, so a changed config or scale
never mixes with earlier results.  A tile marker is written (atomically)
only after the tile's Zarr region is, so a marker always means "on disk".
An output's *owner* (the key whose result it holds, which may replace it) is
the key of its claim, written just before the output is committed, else of its
latest "finalized" record: a run killed between the commit and that record
still owns its output.

**On object storage** (``--out s3://bucket/prefix``, :mod:`pipeline.runs.remote`) the
root is the GDAL name ``/vsis3/bucket/prefix`` and every path above is an object under
the prefix: :class:`RunPaths`' IO methods (``exists``, ``read_bytes``, ``write_file``,
markers, listings, ``clear_work``) go to the bucket, working Zarr stores are written in
place, the lock is a lease object and the manifest one object per record
(:class:`~pipeline.runs.driver.RunDir`).  No worker needs a shared disk.

Every local file here is written by the one output rule (:mod:`io_adapters.output_safety`):
folders created with :func:`~io_adapters.output_safety.make_dirs` (a link at any
component below DIR is refused), files through fresh ``O_EXCL | O_NOFOLLOW``
temporaries renamed into place, the manifest and log appended with ``O_NOFOLLOW``.
:class:`RunPaths` is the picklable part the tasks use on workers (a local run directory
must be on a file system the workers share; one on object storage needs nothing shared
but the bucket); :class:`~pipeline.runs.driver.RunDir` (lock, manifest, log) belongs to
the driver, image keys to :mod:`pipeline.runs.identity`, weights files to
:mod:`pipeline.runs.weights`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from io_adapters.output_safety import (
    UnsafeOutputError,
    check_no_links,
    check_output,
    make_dirs,
    new_temp_file,
    remove_tree,
    replace_onto,
    write_bytes_atomic,
)
from io_adapters.s3_objects import (
    delete_objects,
    delete_under,
    get_bytes,
    is_remote,
    list_under,
    object_exists,
    put_bytes,
)
from io_adapters.vsi import display_url, gdal_path, is_vsi

__all__ = ["RunPaths", "atomic_write_text", "run_root"]

log = logging.getLogger(__name__)



def atomic_write_text(path: Path, text: str, *, root: Path) -> None:
    """Write ``text`` to a fresh temporary beside ``path`` and rename it onto ``path``;
    missing folders are made below the run directory ``root`` (links refused)."""
    make_dirs(path.parent, root=root)
    write_bytes_atomic(path, text.encode("utf-8"))


def run_root(out: str | Path) -> Path:
    """The run folder's root for ``--out``: an ``s3://`` URL as its GDAL name
    (``/vsis3/bucket/prefix``: on object storage), a local folder as given."""
    text = str(out)
    if is_remote(text):
        bucket, _, prefix = text[len("s3://"):].strip("/").partition("/")
        if not bucket or not prefix:
            from pipeline.errors import UsageError

            raise UsageError(f"--out {text}: a run folder on object storage needs a prefix "
                             "under the bucket: s3://bucket/prefix")
        return Path(gdal_path(f"s3://{bucket}/{prefix}"))
    return Path(out)


@dataclass(frozen=True)
class RunPaths:
    """Where each piece of a run lives (no IO; picklable for the workers)."""

    root: Path

    def weights(self, key: str, step: int, group: int | None = None) -> Path:
        return self.root / "weights" / f"{key}_s{step}{'' if group is None else f'_g{group}'}.pt"

    def kernel(self, key: str, group: int | None = None) -> Path:
        """``--kernel estimate``: the kernel choice (``.npz``), of band group ``group``."""
        return self.root / "kernels" / f"{key}{'' if group is None else f'_g{group}'}.npz"

    def store(self, key: str, step: int) -> Path:
        return self.root / "work" / key / f"s{step}.zarr"

    def mask_store(self, key: str, step: int) -> Path:
        return self.root / "work" / key / f"s{step}_mask.zarr"

    def tiles(self, key: str, step: int) -> Path:
        return self.root / "tiles" / key / f"s{step}"

    def marker(self, key: str, step: int, frame: int, tile: int) -> Path:
        return self.tiles(key, step) / f"f{frame}_t{tile}.done"

    def entry(self, key: str) -> Path:
        return self.root / "entries" / f"{key}.json"

    def claim(self, output: Path) -> Path:
        digest = hashlib.sha256(str(output).encode()).hexdigest()[:16]
        return self.root / "claims" / f"{digest}.json"

    def claim_output(self, key: str, output: Path) -> None:
        """Record that ``key`` is about to commit ``output`` (call just before it)."""
        self.write_file(self.claim(output), json.dumps({"output": str(output),
                                                        "key": key}).encode())

    # ------------------------------------------------------------------ IO, local or remote

    @property
    def remote(self) -> bool:
        """Whether the run folder is on object storage (the root a ``/vsis3/`` name)."""
        return is_vsi(self.root)

    def url(self, path: Path | None = None) -> str:
        """The ``s3://`` URL of ``path`` (default: the root) in a remote run folder."""
        return display_url(self.root if path is None else path)

    def exists(self, path: Path) -> bool:
        """Whether the file ``path`` of the run folder exists."""
        return object_exists(self.url(path)) if self.remote else os.path.exists(path)

    def read_bytes(self, path: Path) -> bytes | None:
        """The content of the file ``path``; None when there is none."""
        if self.remote:
            got = get_bytes(self.url(path))
            return None if got is None else got[0]
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def write_file(self, path: Path, data: bytes) -> None:
        """Write ``data`` whole at ``path`` (atomic: a fresh temporary renamed onto it, or
        one PUT); folders are made below the root (links refused)."""
        if self.remote:
            put_bytes(self.url(path), data)
            return
        make_dirs(Path(path).parent, root=self.root)
        write_bytes_atomic(Path(path), data)

    @property
    def assets(self) -> Path:
        return self.root / "report_assets"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def make_dir(self, folder: Path) -> Path:
        """``folder`` (inside the run directory) and its parents; a link there is refused
        (object storage has no folders: nothing to make)."""
        return folder if self.remote else make_dirs(folder, root=self.root)

    def check_output(self, output: Path, *, inputs: tuple[Path, ...]) -> Path:
        """The output rule for an image's output: inside ``outputs/``, not an input."""
        if self.remote:  # a key under outputs/ (inputs are never written through it)
            return output
        return check_output(output, inputs=inputs, root=self.outputs, overwrite=None)

    def output_exists(self, output: Path) -> bool:
        """Whether an image's output exists (a Zarr store on object storage: its
        ``zarr.json``, written last)."""
        if self.remote and Path(output).suffix.lower() == ".zarr":
            return self.store_exists(output)
        return self.exists(output) if self.remote else os.path.exists(output)

    def store_exists(self, store: Path) -> bool:
        """Whether the Zarr store ``store`` exists (its ``zarr.json``)."""
        return self.exists(store / "zarr.json") if self.remote else os.path.exists(store)

    def store_ready(self, store: Path) -> bool:
        """Whether a step's Zarr store exists; one that is (or holds) a link is refused."""
        if self.remote:
            return self.store_exists(store)
        if not os.path.lexists(store):
            return False
        check_no_links(store)
        return True

    def mark_tile(self, key: str, step: int, frame: int, tile: int) -> None:
        """Record a finished tile (call only after its region is written)."""
        path = self.marker(key, step, frame, tile)
        if self.remote:
            put_bytes(self.url(path), b"")
            return
        self.make_dir(path.parent)
        tmp, fd = new_temp_file(path, "tmp")
        os.close(fd)
        replace_onto(tmp, path)

    def clear_tiles(self, key: str, step: int) -> None:
        """Forget the tile markers of ``key``'s step ``step``."""
        folder = self.tiles(key, step)
        if self.remote:
            delete_under(self.url(folder))
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def done_tiles(self, key: str, step: int) -> set[tuple[int, int]]:
        """``{(frame, tile)}`` with a marker."""
        folder = self.tiles(key, step)
        if self.remote:
            names = [n for n in list_under(self.url(folder)) if "/" not in n]
        else:
            names = [p.name for p in folder.glob("f*_t*.done")] if folder.is_dir() else []
        out = set()
        for name in names:
            if name.startswith("f") and name.endswith(".done") and "_t" in name:
                f, t = name[1:-len(".done")].split("_t")
                out.add((int(f), int(t)))
        return out

    def clear_work(self, key: str) -> None:
        """Forget every intermediate of ``key`` (weights, stores, markers, entry, kernel)."""
        if self.remote:
            self._clear_remote(key)
            return
        for p in (self.root / "work" / key, self.root / "tiles" / key):
            remove_tree(p)  # a link: only the link goes
        for folder in (self.root / "weights", self.root / "entries", self.root / "kernels"):
            if os.path.islink(folder):  # never reach through it
                raise UnsafeOutputError(f"{folder}: is a symbolic link inside the run "
                                        "directory; zssr never writes through links")
        for folder, pattern in (("weights", f"{key}_s*.pt"), ("kernels", f"{key}_g*.np[yz]"),
                                ("kernels", f"{key}.npy")):
            for p in (self.root / folder).glob(pattern):  # a missing folder: nothing
                remove_tree(p)
        remove_tree(self.entry(key))
        remove_tree(self.kernel(key))

    def _clear_remote(self, key: str) -> None:
        for folder in (self.root / "work" / key, self.root / "tiles" / key):
            delete_under(self.url(folder))
        for folder, keep in (("weights", lambda n: n.startswith(f"{key}_s") and n.endswith(".pt")),
                             ("kernels", lambda n: n.split(".")[0] == key
                              or n.startswith(f"{key}_g"))):
            url = self.url(self.root / folder)
            delete_objects(url, [n for n in list_under(url) if "/" not in n and keep(n)])
        delete_objects(self.url(self.root / "entries"), [f"{key}.json"])

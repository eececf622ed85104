"""Expand ``zssr run INPUT...`` into a stable, de-duplicated list of images.

An INPUT is a file, a folder, a glob pattern or a URL:

* a file is one image (its format is judged later, by content);
* a folder that is a Zarr store or a folder of DICOM slices (judged by
  :func:`io_adapters.detect.sniff`) is **one** image; any other folder is
  scanned (not recursively): its files with an image suffix and its
  sub-folders that are Zarr stores or DICOM series become images, other
  files (``README.txt``) are skipped;
* a pattern with ``*``, ``?`` or ``[`` is expanded with :func:`glob.glob`
  (``**`` recurses) and each match is treated as above;
* a URL (``s3://``, ``gs://``, ``az://``, ``https://``, a ``/vsi…`` name) is one object,
  an ``s3://`` prefix (``…/``) or pattern the objects it lists
  (:mod:`pipeline.runs.remote_inputs`); the item's path is GDAL's ``/vsi…`` name.

Order is the order of the arguments, then sorted names within a folder or a
pattern; the same resolved path given twice is kept once.  Matches of a pattern
or a folder scan never include zssr's own results: anything inside a run
directory or a batch's run folder below the pattern's fixed part
(:func:`io_adapters.output_safety.is_tool_folder`), or inside a folder given as
``exclude`` (the current run's ``--out``), is left out, so a second run never
super-resolves the first one's outputs.  A missing input
or a pattern without matches does not stop the batch: it becomes an
:class:`InputItem` with an error, recorded as a failed image.

>>> items = expand_inputs(["/nonexistent/scene.tif"])
>>> items[0].error_class, items[0].ok
('InputNotFoundError', False)
"""

from __future__ import annotations

import glob
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from io_adapters.detect import sniff
from io_adapters.errors import IOAdapterError
from io_adapters.objstore import is_remote
from io_adapters.output_safety import is_tool_folder
from io_adapters.safe_files import make_dirs
from io_adapters.vsi import display_url, gdal_path, is_vsi
from pipeline.catalog.stac_input import item_href, resolve_item_input
from pipeline.errors import InputError, UsageError
from pipeline.runs.remote_inputs import expand_url, is_url

__all__ = ["InputItem", "expand_inputs", "output_names", "pair_ground_truth", "IMAGE_SUFFIXES",
           "input_location", "output_location"]

log = logging.getLogger(__name__)

#: File suffixes that make an unreadable file in a scanned folder a failed image
#: (instead of a silently skipped non-image file).
IMAGE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".dcm", ".dicom",
                            ".ima"})
_GLOB_CHARS = frozenset("*?[")


def input_location(text: str) -> Path:
    """An INPUT argument as a path: ``s3://``, ``gs://``, ``az://`` and ``http(s)://`` URLs
    become GDAL's ``/vsi…`` names (``pathlib`` would fold their ``//``: ``s3:/b/k``);
    ``/vsi…`` names and local paths are kept."""
    return Path(gdal_path(text))


def output_location(text: str) -> Path | str:
    """An OUTPUT argument: an ``s3://`` URL stays a string (built locally, then uploaded:
    :func:`io_adapters.objstore.staged_output`), anything else is a path."""
    return text if is_remote(text) else Path(text)


@dataclass(frozen=True)
class InputItem:
    """One image of the batch: a resolved path, or the reason it cannot be one."""

    path: Path
    spec: str  # the INPUT argument it came from
    error_class: str | None = None
    error: str | None = None
    source: str | None = None  # what ``path`` was made from (a STAC Item: path is its VRT)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def stem(self) -> str:
        """Name used for outputs and ground-truth pairing (a folder's name, a file's stem;
        an object's stem, its URL's query left out)."""
        if is_vsi(self.path):  # a Zarr store keeps its suffix, as a local folder does
            key = PurePosixPath(urlsplit(self.location).path)
            return key.name if key.suffix.lower() == ".zarr" else key.stem
        return self.path.name if self.path.is_dir() else self.path.stem

    @property
    def origin(self) -> Path:
        """What the output rule keeps outputs away from: the input, or the STAC Item whose
        stacked VRT (kept in the run folder, :func:`expand_inputs`) is the input."""
        return self.path if self.source is None else Path(gdal_path(self.source))

    @property
    def location(self) -> str:
        """The input as the user names it: the path, the URL (never a ``/vsi`` name), or
        the STAC Item its bands were stacked from."""
        return self.source if self.source is not None else display_url(self.path)


def _failed(path: Path, spec: str, exc: BaseException) -> InputItem:
    return InputItem(path=path, spec=spec, error_class=type(exc).__name__, error=str(exc))


def _is_single_image_folder(path: Path) -> bool:
    try:
        return sniff(path) in ("zarr", "dicom")
    except (IOAdapterError, OSError):
        return False


def _scan_folder(folder: Path, spec: str) -> list[InputItem]:
    out: list[InputItem] = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if _is_single_image_folder(child):
                out.append(InputItem(child.resolve(), spec))
            continue
        try:
            sniff(child)
        except (IOAdapterError, OSError) as exc:
            if child.suffix.lower() in IMAGE_SUFFIXES:
                out.append(_failed(child.resolve(), spec, exc))
            else:
                log.info("skipping %s: not an image (%s)", child, exc)
            continue
        out.append(InputItem(child.resolve(), spec))
    if not out:
        log.warning("%s: folder holds no images", folder)
    return out


def _glob_base(spec: str) -> Path:
    """The fixed part of a pattern (the folders before the first wildcard)."""
    parts = Path(spec).parts
    fixed = [p for p in parts[:next((i for i, p in enumerate(parts) if _GLOB_CHARS & set(p)),
                                    len(parts))]]
    return Path(*fixed).resolve() if fixed else Path.cwd()


def _tool_output(path: Path, base: Path, exclude: Sequence[Path]) -> bool:
    """Whether ``path`` (found under ``base``) is one of zssr's own results."""
    path = path.resolve()
    if any(path.is_relative_to(e) for e in exclude):
        return True
    if not path.is_relative_to(base):
        return False
    folder = path
    while folder != base and folder.is_relative_to(base):
        if is_tool_folder(folder):
            return True
        folder = folder.parent
    return False


def _expand_path(path: Path, spec: str) -> list[InputItem]:
    if not path.exists():
        from io_adapters.errors import InputNotFoundError

        return [_failed(path.absolute(), spec,
                        InputNotFoundError(f"{path}: no such file or folder"))]
    if path.is_dir() and not _is_single_image_folder(path):
        return _scan_folder(path, spec)
    if not path.is_dir() and not path.is_file():  # a FIFO or device: reading it may block
        from io_adapters.errors import InputNotFoundError

        return [_failed(path.absolute(), spec, InputNotFoundError(
            f"{path}: not a regular file (a pipe, socket or device)"))]
    return [InputItem(path.resolve(), spec)]


def _stac_item(spec: str, assets: str | Sequence[str] | None,
               stac_dir: Path | None) -> list[InputItem] | None:
    """A STAC Item INPUT stacked into a VRT under ``stac_dir`` (one folder per Item), or a
    failed item; None for another input (:func:`resolve_item_input`'s rules)."""
    href = item_href(spec)
    if href is None or stac_dir is None:
        return None
    workdir = stac_dir / _short_hash(href, 12)
    try:
        stac_dir.parent.mkdir(parents=True, exist_ok=True)  # the run folder
        make_dirs(workdir, root=stac_dir.parent)  # a link there is refused
        stac = resolve_item_input(spec, assets, workdir=workdir)
    except (IOAdapterError, UsageError, InputError, OSError) as exc:
        return [_failed(Path(gdal_path(spec)), spec, exc)]
    return [InputItem(stac.vrt, spec, source=stac.item_href)] if stac else None


def expand_inputs(specs: Iterable[str | Path | InputItem], *,
                  exclude: Sequence[str | Path] = (), assets: str | Sequence[str] | None = None,
                  stac_dir: Path | None = None) -> list[InputItem]:
    """Files, folders and globs -> one :class:`InputItem` per image (see the module doc).

    ``exclude``: folders whose content is never an input (the current run directory);
    a file named explicitly inside one becomes a failed item.  With ``stac_dir``, a STAC
    Item input (a ``.json`` URL or a local Item file) is the VRT stacking its ``assets``,
    written there (``--assets``; an Item without them is a failed item).  An
    :class:`InputItem` passes as it is.
    """
    items: list[InputItem] = []
    seen: set[Path] = set()
    skip = [Path(e).resolve() for e in exclude]
    for raw in specs:
        spec = str(raw)
        stacked = None if isinstance(raw, InputItem) else _stac_item(spec, assets, stac_dir)
        if isinstance(raw, InputItem):
            found = [raw]
        elif stacked is not None:
            found = stacked
        elif is_url(spec):  # by URL; s3:// prefixes and patterns listed (runs.remote_inputs)
            try:
                found = [InputItem(Path(gdal_path(url)), spec) for url in expand_url(spec)]
            except (IOAdapterError, UsageError) as exc:
                found = [_failed(Path(gdal_path(spec)), spec, exc)]
        elif _GLOB_CHARS & set(spec) and not Path(spec).exists():
            base = _glob_base(spec)
            every = sorted(glob.glob(spec, recursive=True))
            matches = [m for m in every if not _tool_output(Path(m), base, skip)]
            if not matches:
                from io_adapters.errors import InputNotFoundError

                what = "only zssr's own outputs" if every else "no file"
                found = [_failed(Path(spec).absolute(), spec,
                                 InputNotFoundError(f"{spec}: pattern matches {what}"))]
            else:
                found = [it for m in matches for it in _expand_path(Path(m), spec)]
        else:
            found = _expand_path(Path(spec), spec)
            if Path(spec).is_dir():
                found = [it for it in found if not _tool_output(it.path, it.path.parent, skip)]
            elif found and _tool_output(found[0].path, found[0].path, skip):
                found = [_failed(found[0].path, spec, UsageError(
                    f"{spec}: lies inside this run's own folder; inputs never come from it"))]
        for item in found:
            if item.path not in seen:
                seen.add(item.path)
                items.append(item)
    return items


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def output_names(items: Sequence[InputItem]) -> dict[Path, str]:
    """A unique name stem per image: its stem, plus a short path hash where stems collide."""
    counts = Counter(it.stem for it in items)
    return {it.path: it.stem if counts[it.stem] == 1 else f"{it.stem}_{_short_hash(str(it.path))}"
            for it in items}


def pair_ground_truth(items: Sequence[InputItem], folder: Path) -> dict[Path, Path]:
    """Pair each image with the entry of ``folder`` that has the same stem.

    Raises :class:`~pipeline.errors.UsageError` naming every input without a
    ground truth, every ground truth without an input, and ambiguous stems.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--ground-truth {folder}: not a folder; give the folder holding one "
                         "reference image per input, named like the input")
    truths: dict[str, list[Path]] = {}
    for child in sorted(folder.iterdir()):
        if not child.name.startswith("."):
            truths.setdefault(child.name if child.is_dir() else child.stem, []).append(child)
    problems = []
    stems = Counter(it.stem for it in items)
    pairs: dict[Path, Path] = {}
    for item in items:
        if stems[item.stem] > 1:
            problems.append(f"several inputs are named {item.stem!r}")
        elif item.stem not in truths:
            problems.append(f"no ground truth for {item.path.name} (expected {item.stem}.*)")
        elif len(truths[item.stem]) > 1:
            names = ", ".join(p.name for p in truths[item.stem])
            problems.append(f"ambiguous ground truth for {item.path.name}: {names}")
        else:
            pairs[item.path] = truths[item.stem][0]
    extra = sorted(set(truths) - set(stems))
    if extra:
        problems.append("ground truth without an input: " + ", ".join(
            p.name for s in extra for p in truths[s]))
    if problems:
        raise UsageError(f"--ground-truth {folder}: images and references must pair up by "
                         f"name: {'; '.join(dict.fromkeys(problems))}")
    return pairs

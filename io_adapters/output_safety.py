"""The one rule for every write zssr makes (outputs, side outputs, run folders, control files).

A write is a promise about the file system.  Every path zssr writes goes through
:func:`check_output` before any compute, and every byte goes through the primitives of
:mod:`io_adapters.safe_files` (re-exported here), so the promise is kept in one place:

* **never an input**: not the input itself, not a folder holding an input (its
  ancestor), not a path inside an input folder (a Zarr store, a DICOM series);
* **never a control file**: the batch state file, lock and run folder, a run
  directory's lock and manifest (callers pass them as ``control``); the state file,
  every lock file and a run folder's manifest are also known by their names, so a
  side output of one command never replaces another run's;
* **confined** to the declared output folder (``root``) when there is one;
* **never through a link**: every component the tool creates or replaces (below the
  declared output folder, or the output name itself) is checked with ``lstat`` and a
  symbolic link there is refused; new files are opened with ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` (which fails on any link, even a dangling one), temporary folders are
  created with ``mkdir`` (which never follows a link), append-only logs with
  ``O_NOFOLLOW``, and results are moved into place with ``os.replace`` (a rename
  replaces a name, never the file a link points to).  There is no flag to allow
  links: point the output at the real location instead.  A declared output folder
  that already exists may itself be reached through a link the user made;
* **overwrite replaces only what zssr wrote**: an existing output is replaced (with
  ``overwrite``) only when it is a file or store of the format zssr writes at that
  name (a PNG, a TIFF, a DICOM file, a Zarr store holding nothing else, a folder of
  DICOM files only, a JSON document) and holds no link; any other file or folder is
  refused, whatever the flag says.

Refusals are :class:`UnsafeOutputError` (a :class:`~io_adapters.errors.WriteError`:
exit code 7) with one line naming the path and the problem.

This module lives in ``io_adapters`` (the lowest floor that writes) because the
format writers need it and may not import ``pipeline``; the pipeline and the
workflows call it for everything else they write.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .safe_files import (
    UnsafeOutputError,
    _link_refusal,
    _refuse,
    check_no_links,
    create_file,
    make_dirs,
    new_temp_dir,
    new_temp_file,
    open_append,
    remove_tree,
    replace_onto,
    temp_name,
    token,
    write_bytes_atomic,
    write_text_atomic,
)

__all__ = ["UnsafeOutputError", "check_output", "conflict", "Claimed", "check_replaceable", "absolute",
           "temp_name", "token", "new_temp_file",
           "create_file", "new_temp_dir", "replace_onto", "write_bytes_atomic",
           "write_text_atomic", "open_append", "make_dirs", "remove_tree", "check_no_links",
           "is_tool_folder", "RUN_LOCK", "RUN_MANIFEST", "BATCH_STATE_FILE", "BATCH_LOCK_FILE",
           "BATCH_RUN_DIR"]

RUN_LOCK = ".lock"  # a zssr run directory: lock + manifest mark it as the tool's own folder
RUN_MANIFEST = "manifest.jsonl"
BATCH_STATE_FILE = ".zssr-batch-state.json"
BATCH_LOCK_FILE = ".zssr-batch.lock"
BATCH_RUN_DIR = ".zssr-batch-run"

_MAX_JSON = 64 << 20


def absolute(path: str | Path) -> Path:
    """``path`` made absolute with its *folder* resolved and its last name kept as given
    (so a link at the last name is seen, never followed)."""
    p = Path(os.path.abspath(path))
    return p.parent.resolve() / p.name if p.name else p


def _check_links(path: Path, root: Path | None) -> None:
    """Refuse a link at ``path`` or at any component between ``root`` and it (lexically)."""
    lexical = Path(os.path.abspath(path))
    parts = [lexical]
    if root is not None:
        base = Path(os.path.abspath(root))
        if lexical.is_relative_to(base):
            parts = [base.joinpath(*lexical.relative_to(base).parts[:i + 1])
                     for i in range(len(lexical.relative_to(base).parts))]
    for part in parts:
        if os.path.islink(part):
            raise _link_refusal(Path(path), part)


class Claimed:
    """Paths no output may equal, hold or lie inside (inputs, control files), indexed once
    so a batch checks thousands of outputs against thousands of inputs in linear time."""

    def __init__(self, paths: Iterable[str | Path], what: str) -> None:
        self.what = what
        self.paths = {Path(p).resolve() for p in paths}
        self.holders: dict[Path, Path] = {}  # every folder above a path -> that path
        for p in sorted(self.paths):
            for folder in p.parents:
                self.holders.setdefault(folder, p)

    def problem(self, out: Path) -> str | None:
        """What is wrong with writing at ``out`` (absolute), or None."""
        if out in self.paths:
            return f"output path equals the {self.what}"
        if out in self.holders:
            return f"output path is a folder holding the {self.what} {self.holders[out]}"
        inside = next((f for f in out.parents if f in self.paths), None)
        return None if inside is None else f"output path lies inside the {self.what} {inside}"


def conflict(out: Path, *, inputs: Iterable[str | Path] | Claimed = (),
             control: Iterable[str | Path] | Claimed = ()) -> str | None:
    """What is wrong with writing at ``out`` (absolute) given the inputs and control files,
    or None: equal to one, a folder holding one, or a path inside one."""
    for others, what in ((inputs, "input"), (control, "control file of zssr")):
        claimed = others if isinstance(others, Claimed) else Claimed(others, what)
        problem = claimed.problem(out)
        if problem is not None:
            return problem
    return None


def check_output(path: str | Path, *, inputs: Iterable[str | Path] = (),
                 root: str | Path | None = None, control: Iterable[str | Path] = (),
                 overwrite: bool | None = False) -> Path:
    """Check ``path`` against the rule (module doc) before anything is computed.

    Returns the absolute path to write (folder resolved, last name kept).  An
    existing output needs ``overwrite`` and must be one zssr wrote
    (:func:`check_replaceable`); ``overwrite=None`` leaves that to the caller.
    """
    _check_links(path, root)
    out = absolute(path)
    if root is not None:
        base = Path(root).resolve()
        if out == base or not out.is_relative_to(base):
            raise _refuse(Path(path), f"output path resolves to {out}, outside the output "
                                      f"folder {base}; outputs must stay inside it")
    problem = conflict(out, inputs=inputs, control=control) or _control_by_name(out)
    if problem is not None:
        raise _refuse(out, f"{problem}; choose another output")
    if overwrite is not None and os.path.lexists(out):
        if not overwrite:
            raise _refuse(out, "output already exists; delete it or pass overwrite=True "
                               "(--overwrite)")
        check_replaceable(out)
    return out


def _control_by_name(out: Path) -> str | None:
    """Control files known by their names wherever they are, so that no command's output
    (a side output such as ``--history`` or ``eval --json`` above all) replaces another
    run's: a batch's state file, any lock file (``.<name>.lock``, ``.zssr-batch.lock``, a
    run folder's ``.lock``) and a run folder's manifest."""
    name = out.name
    if name == BATCH_STATE_FILE or (name.startswith(".") and name.endswith(".lock")):
        return "output path is a control file of zssr (a batch's state file or a lock)"
    if name == RUN_MANIFEST and is_tool_folder(out.parent):
        return "output path is a control file of zssr (the manifest of a run folder)"
    return None


_MAGIC = {".png": (0, (b"\x89PNG\r\n\x1a\n",)),
          ".tif": (0, (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")),
          ".dcm": (128, (b"DICM",)), ".nii": (344, (b"n+1\x00",)), ".gz": (0, (b"\x1f\x8b",))}
_MAGIC[".tiff"] = _MAGIC[".tif"]


def _head(path: Path, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(n)


def _is_dicom_file(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode) and _head(path, 132)[128:132] == b"DICM"


def _is_zarr_store(path: Path) -> bool:
    """A Zarr store and nothing else: metadata at the top, every entry a Zarr node."""
    meta = {"zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata"}
    names = os.listdir(path)
    if not meta & set(names):
        return False
    for name in names:
        p = path / name
        if name in meta:
            continue
        if not (p.is_dir() and not p.is_symlink() and meta & set(os.listdir(p))):
            return False
    return True


def check_replaceable(path: Path) -> None:
    """Refuse to replace ``path`` unless it is an output of the format zssr writes there."""
    st = os.lstat(path)
    suffix = path.suffix.lower()
    if stat.S_ISLNK(st.st_mode):
        raise _link_refusal(path, path)
    problem = None
    try:
        if stat.S_ISDIR(st.st_mode):
            check_no_links(path)
            if not os.listdir(path):  # an empty folder holds nothing to lose
                ok = True
            elif suffix == ".zarr":
                ok = _is_zarr_store(path)
            else:
                ok = suffix == "" and all(_is_dicom_file(path / n) for n in os.listdir(path))
            kind = "a Zarr store" if suffix == ".zarr" else "a folder of DICOM files"
            problem = None if ok else (f"is a folder that is not {kind} written by zssr (it "
                                       "holds other files); --overwrite never removes it")
        elif not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file; --overwrite never replaces it"
        elif suffix == ".json":
            if st.st_size > _MAX_JSON:
                problem = "is not a JSON document written by zssr; --overwrite never replaces it"
            else:
                json.loads(_head(path, _MAX_JSON).decode("utf-8"))
        elif suffix in _MAGIC:
            offset, magics = _MAGIC[suffix]
            head = _head(path, offset + 8)[offset:]
            if not any(head.startswith(m) for m in magics):
                problem = (f"is not a {suffix} file written by zssr (its content says "
                           "otherwise); --overwrite never replaces it")
        else:
            problem = f"has a suffix ({suffix or 'none'}) zssr does not write; not replaced"
    except (ValueError, UnicodeDecodeError):
        problem = "is not a JSON document written by zssr; --overwrite never replaces it"
    except OSError as exc:
        problem = f"cannot be inspected before replacing it ({exc.strerror or exc})"
    if problem is not None:
        raise _refuse(path, problem)


def is_tool_folder(folder: Path) -> bool:
    """Whether ``folder`` is one zssr made for itself (a run directory, a batch's run folder)."""
    folder = Path(folder)
    return folder.name == BATCH_RUN_DIR or (
        os.path.lexists(folder / RUN_LOCK) and os.path.lexists(folder / RUN_MANIFEST))

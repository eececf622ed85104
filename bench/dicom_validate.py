"""Validate derived DICOM output with dciodvfy (dicom3tools) on every shared DICOM file.

For each file (or folder series) under ``--data`` and each ``--transfer-syntax``:
read it, write a x2 derived DICOM of nearest-upsampled stored values, run ``dciodvfy``
on source and output and print one row: errors in the source, in the output, errors
new in the output (must be 0), whether the output decodes to exactly the values
written (``--transfer-syntax rle`` / ``jpeg2000-lossless`` are lossless), pixel
spacing in/out and the shift of the first pixel's position, both read back from the
written file.  A syntax the writer refuses for a file (JPEG 2000 below 32 pixels a
side) gives a row saying so.  The shift is checked as a 3-vector, not
only its length: every frame's written ImagePositionPatient must equal
``P + ((1/s - 1) / 2) * (PixelSpacing[1] * X + PixelSpacing[0] * Y)`` (PS3.3
C.7.6.2.1.1: X, Y the row and column direction cosines of ImageOrientationPatient,
PixelSpacing = (between rows, between columns)), to ``POSITION_TOLERANCE_MM``;
at x2 that is a quarter of the old pixel along each in-plane direction.

    .venv/bin/python bench/dicom_validate.py --json /tmp/dicom_validate.json \
        --transfer-syntax explicit-little rle jpeg2000-lossless

Needs ``dciodvfy`` on PATH (Debian/Ubuntu package ``dicom3tools``). Exits 1 if
any output has an error its source does not have, or a position off the expected
one by more than ``POSITION_TOLERANCE_MM``.  ``--data tests/data/geometry`` checks
the oblique, non-square-pixel series of the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from io_adapters.base import MedicalInfo, full_window
from io_adapters.dicom import (
    TRANSFER_SYNTAXES,
    DicomReader,
    DicomWriter,
    scale_dicom_metadata,
    sniff_dicom,
)
from io_adapters.errors import InvalidDataError

# dciodvfy flags MR Pulse Sequence / Bulk Motion attributes in DERIVED images, but PS3.3
# C.8.13.4 says "Required if Image Type Value 1 is ORIGINAL or MIXED. May be present
# otherwise."; dicom3tools' conditions lack "may be present otherwise".
POSITION_TOLERANCE_MM = 1e-4  # DS strings keep 16 characters: ~1e-10 mm at these sizes
FALSE_POSITIVES = re.compile(r"Attribute present when condition unsatisfied .*Module=<("
                             r"MRPulseSequence|BulkMotionSynchronization)>")


def dciodvfy_errors(path: Path) -> tuple[set[str], int]:
    """Normalised error lines of one file and the number of ignored false positives."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False,
                         timeout=120)
    text = run.stdout + run.stderr
    # exit 0 (clean) or 1 (errors reported) with output; anything else means the file was
    # not verified, and an empty error set from a tool that never ran must not pass
    if run.returncode not in (0, 1) or not text.strip() or "Abort -" in text \
            or "Dicom dataset read failed" in text or "Information Object Not found" in text:
        raise SystemExit(f"dciodvfy did not verify {path} (exit {run.returncode}): "
                         f"{text.strip()[:300]!r}")
    errors, ignored = set(), 0
    for line in text.splitlines():
        if not line.startswith("Error"):
            continue
        if FALSE_POSITIVES.search(line):
            ignored += 1
            continue
        line = re.sub(r" = <[^>]*>", "", line.replace(str(path), "<file>"))
        errors.add(" ".join(re.sub(r"\d+ dec", "N dec", line).split()))
    return errors, ignored


def _files(source: Path, output: Path) -> list[tuple[Path, Path]]:
    if source.is_dir():
        return [(source / p.name, output / p.name) for p in sorted(output.iterdir())]
    return [(source, output)]


def validate(source: Path, workdir: Path, scale: int = 2,
             transfer_syntax: str = "explicit-little") -> dict:
    reader = DicomReader(source)
    meta = scale_dicom_metadata(reader.meta, scale)
    name = source.name if source.is_dir() else f"{source.stem}_x{scale}.dcm"
    output = workdir / transfer_syntax / name
    output.parent.mkdir(exist_ok=True)
    written = [np.kron(s, np.ones((1, scale, scale), s.dtype))
               for s in (reader.read(frame=i) for i in range(meta.frames))]
    try:
        with DicomWriter(output, meta, transfer_syntax=transfer_syntax) as writer:
            for i, values in enumerate(written):
                writer.write(values, full_window(meta), frame=i)
    except InvalidDataError as exc:
        return {"file": source.name, "transfer_syntax": transfer_syntax,
                "frames": meta.frames, "refused": str(exc)}
    back = DicomReader(output)
    pixels_equal = all(np.array_equal(back.read(frame=i), v) for i, v in enumerate(written))
    src_errors: set[str] = set()
    out_errors: set[str] = set()
    new: set[str] = set()
    ignored = 0
    for before, after in _files(source, output):
        b, _ = dciodvfy_errors(before)
        a, skipped = dciodvfy_errors(after)
        src_errors |= b
        out_errors |= a
        new |= a - b
        ignored += skipped
    written = back.meta.medical  # geometry as written, read back
    p_in, p_out = reader.meta.medical.positions, written.positions
    shift = math.dist(p_in[0], p_out[0]) if p_in else None
    expected = _expected_positions(reader.meta.medical, scale)
    error = (max(math.dist(e, p) for e, p in zip(expected, p_out, strict=True))
             if expected and len(p_out) == len(expected) else None)
    return {
        "file": source.name,
        "transfer_syntax": transfer_syntax,
        "frames": meta.frames,
        "pixels_equal": pixels_equal,
        "source_errors": len(src_errors),
        "output_errors": len(out_errors),
        "new_errors": sorted(new),
        "ignored_false_positives": ignored,
        "spacing_in": reader.meta.medical.pixel_spacing,
        "spacing_out": written.pixel_spacing,
        "position_shift_mm": shift,
        "expected_shift_mm": math.dist(p_in[0], expected[0]) if expected else None,
        "position_out": list(p_out[0]) if p_out else None,
        "expected_position": list(expected[0]) if expected else None,
        "position_error_mm": error,  # largest over the frames, as 3-vectors
        "position_ok": (error is not None and error <= POSITION_TOLERANCE_MM) if expected
        else None,
    }


def _expected_positions(medical: MedicalInfo, scale: float) -> list[tuple[float, ...]]:
    """Each frame's HR first-pixel centre, from the source header (PS3.3 C.7.6.2.1.1).

    Pixel (column i, row j) lies at ``P + i * PixelSpacing[1] * X + j *
    PixelSpacing[0] * Y``; HR pixel 0 of an axis is centred at LR index
    ``(1/s - 1) / 2`` (MATLAB imresize), so both indices are that.
    """
    if not medical.positions or not medical.orientation or not medical.pixel_spacing:
        return []
    row_dir = np.asarray(medical.orientation[:3], dtype=float)
    col_dir = np.asarray(medical.orientation[3:6], dtype=float)
    row_spacing, col_spacing = medical.pixel_spacing
    half = (1.0 / scale - 1.0) / 2.0
    offset = half * (col_spacing * row_dir + row_spacing * col_dir)
    return [tuple(float(v) for v in np.asarray(p, dtype=float) + offset)
            for p in medical.positions]


def _spacing(s: tuple[float, float] | None) -> str:
    return "-" if s is None else f"{s[0]:.6g}/{s[1]:.6g}"


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _row(r: dict) -> str:
    head = f"{r['file']:<24} {r['transfer_syntax']:<17} {r['frames']:>6} "
    if "refused" in r:
        return f"{head}refused: {r['refused']}"
    return (f"{head}{r['source_errors']:>7} {r['output_errors']:>7} "
            f"{len(r['new_errors']):>4} {r['ignored_false_positives']:>7} "
            f"{'yes' if r['pixels_equal'] else 'NO':>6} "
            f"{_spacing(r['spacing_in']):>20} {_spacing(r['spacing_out']):>20} "
            f"{_mm(r['position_shift_mm']):>10} {_mm(r['expected_shift_mm']):>10} "
            f"{_mm(r['position_error_mm']):>10}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/dicom"))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--transfer-syntax", nargs="+", choices=tuple(TRANSFER_SYNTAXES),
                        default=["explicit-little"], help="output transfer syntaxes to check")
    args = parser.parse_args(argv)
    if shutil.which("dciodvfy") is None:
        print("dciodvfy not found: install dicom3tools", file=sys.stderr)
        return 2
    sources = [p for p in sorted(args.data.iterdir()) if sniff_dicom(p)]
    rows = []
    print(f"{'file':<24} {'transfer syntax':<17} {'frames':>6} {'src_err':>7} {'out_err':>7} "
          f"{'new':>4} {'ignored':>7} {'pixels':>6} {'spacing in (mm)':>20} {'spacing out (mm)':>20} {'shift mm':>10} {'expected':>10} "
          f"{'pos err':>10}")
    with tempfile.TemporaryDirectory(prefix="dicom_validate_") as tmp:
        for source in sources:
            for syntax in args.transfer_syntax:
                row = validate(source, Path(tmp), transfer_syntax=syntax)
                rows.append(row)
                print(_row(row))
                for line in row.get("new_errors", ()):
                    print(f"    NEW: {line}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = [r["file"] for r in rows if r.get("position_ok") is False
           or r.get("pixels_equal") is False]
    if bad:
        print(f"positions off the expected 3-vector by > {POSITION_TOLERANCE_MM} mm, or "
              f"pixels not read back as written: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad or any(r.get("new_errors") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

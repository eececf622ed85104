"""Build the bad-input corpus: files plus one :class:`Case` record per scenario.

    .venv/bin/python tests/corpus/make_corpus.py /tmp/corpus   # writes and lists the cases

``build_corpus(root, seed=0)`` writes every case under ``root/<case name>/``
(inputs in ``in/``, an empty output folder ``out/``) and returns the records.
Each record holds the ``zssr`` argument list (absolute paths), the expected
error class (a key of :data:`pipeline.errors.EXIT`, ``"ok"`` for cases that
must succeed), a regex the one-line error message must match (it names the
file and the problem), the inputs whose bytes must not change and the output
folder that must hold nothing partial afterwards.  Cases whose problem is the
input file itself are marked ``batch``: :mod:`tests.test_corpus` also runs
them inside a ``zssr run`` batch of good files.

Everything is generated from the small real files in ``tests/data`` and a
seeded generator; nothing here is committed as a binary.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _files as F  # noqa: E402

__all__ = ["Case", "build_corpus", "TINY"]

#: Settings that make a successful case take about a second.
TINY = ("--set", "train.max_iters=3", "--set", "net.depth=3", "--set", "net.width=8",
        "--set", "infer.back_projection_iters=1", "--set", "train.crop_size=16")


@dataclass(frozen=True)
class Case:
    """One corpus scenario and what must come of it."""

    name: str
    args: tuple[str, ...]  # argv after ``zssr``
    expect: str  # key of pipeline.errors.EXIT
    message: str  # regex for the text after "zssr <cmd>: error: " ("" when expect == "ok")
    inputs: tuple[Path, ...]  # files/folders whose bytes must not change
    out_dir: Path  # must hold only ``outputs`` afterwards (compared with its state before)
    outputs: tuple[str, ...] = ()  # names that must exist in out_dir afterwards
    bad_input: Path | None = None  # the input itself is the problem: also run it in a batch
    note: str = ""
    preexisting: tuple[str, ...] = field(default=())  # names in out_dir before the run


def _named(path: Path, problem: str) -> str:
    """Regex: the message names ``path`` and then matches ``problem``."""
    return re.escape(str(path)) + r".*" + problem


class _Builder:
    """Collects cases; each ``add_*`` call writes files under ``root/<name>``."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root.resolve()
        self.rng = np.random.default_rng(seed)
        self.cases: list[Case] = []

    def dirs(self, name: str) -> tuple[Path, Path]:
        case = self.root / name
        (case / "in").mkdir(parents=True)
        (case / "out").mkdir()
        return case / "in", case / "out"

    def upscale(self, name: str, make: Callable[[Path], Path], expect: str, problem: str, *,
                out_name: str = "sr.png", extra: tuple[str, ...] = (), batch: bool = True,
                named: Path | None = None, note: str = "") -> None:
        """A case ``zssr upscale <make(in_dir)> out/<out_name> --scale 2 ...``."""
        src, out = self.dirs(name)
        inp = make(src)
        args = ("upscale", str(inp), str(out / out_name), "--scale", "2", *TINY, *extra)
        self.cases.append(Case(
            name=name, args=args, expect=expect,
            message="" if expect == "ok" else _named(named or inp, problem),
            inputs=(src,), out_dir=out, outputs=(out_name,) if expect == "ok" else (),
            bad_input=inp if batch else None, note=note))

    def with_good_input(self, name: str, expect: str, problem: str, *,
                        options: Callable[[Path, Path], tuple[str, ...]],
                        out_name: str = "sr.png",
                        named: Callable[[Path, Path], Path | None] | None = None,
                        source: Path = F.PNG, note: str = "") -> None:
        """A good input with bad options: ``options(in_dir, out_dir)`` gives extra argv."""
        src, out = self.dirs(name)
        inp = F.copy(source, src / source.name)
        extra = options(src, out)
        target = out / out_name
        if extra[:1] == ("__OUT__",):  # the options name the output path
            target, extra = Path(extra[1]), extra[2:]
        path = inp if named is None else named(src, out)
        args = ("upscale", str(inp), str(target), "--scale", "2", *TINY, *extra)
        self.cases.append(Case(
            name=name, args=args, expect=expect,
            message="" if expect == "ok" else problem if path is None else _named(path, problem),
            inputs=(src,), out_dir=out, note=note,
            preexisting=tuple(sorted(p.name for p in out.iterdir()))))


def _input_cases(b: _Builder) -> None:
    b.upscale("missing_file", lambda d: d / "nothing.png", "input", "no such file")
    b.upscale("empty_folder", lambda d: _mkdir(d / "empty"), "format",
              "neither a Zarr store .* nor a folder of DICOM", batch=False,
              note="a folder is a valid input kind (DICOM series, Zarr), so: unsupported")
    b.upscale("zero_byte_png", lambda d: _touch(d / "empty.png"), "corrupt", "empty")
    b.upscale("zero_byte_dcm", lambda d: _touch(d / "empty.dcm"), "corrupt", "empty")
    for suffix in ("tif", "dcm", "png"):
        b.upscale(f"text_as_{suffix}", lambda d, s=suffix: F.text_file(d / f"notes.{s}"),
                  "format", "unsupported file content")
    b.upscale("fifo_as_png", lambda d: _fifo(d / "pipe.png"), "input", "not a regular file",
              note="opening a FIFO would block forever")


def _truncation_cases(b: _Builder) -> None:
    png_size = F.PNG.stat().st_size
    for cut, expect, problem in ((4, "format", "unsupported file content"),
                                 (40, "corrupt", "(header|truncated|cannot)"),
                                 (200, "corrupt", "(truncated|cannot decode)"),
                                 (png_size // 2, "corrupt", "(truncated|cannot decode)"),
                                 (png_size - 40, "corrupt", "(truncated|cannot decode)")):
        b.upscale(f"png_cut_{cut}", lambda d, c=cut: F.truncated(F.PNG, d / "cut.png", c),
                  expect, problem)
    b.upscale("png_without_iend", lambda d: F.truncated(F.PNG, d / "no_iend.png", png_size - 12),
              "ok", "", note="only the 12-byte IEND trailer is missing; every pixel decodes")
    tif_size = F.TIFF.stat().st_size
    for cut in (8, 1000, tif_size // 2, tif_size - 100):
        b.upscale(f"tif_cut_{cut}", lambda d, c=cut: F.truncated(F.TIFF, d / "cut.tif", c),
                  "corrupt", "(damaged|truncated|cannot read)", out_name="sr.tif")

    def cog_cut(d: Path, frac: float) -> Path:
        full = F.cog_copy(F.TIFF, d.parent / "full_cog.tif")
        out = F.truncated(full, d / "cut_cog.tif", int(full.stat().st_size * frac))
        full.unlink()
        return out

    for frac in (0.5, 0.9):
        b.upscale(f"cog_cut_{int(frac * 100)}pct", lambda d, f=frac: cog_cut(d, f), "corrupt",
                  "(damaged|truncated|cannot read)", out_name="sr.tif",
                  note="header first (COG layout): the header opens, the pixels are cut")
    dcm_size = F.DICOM.stat().st_size
    for cut, expect, problem in ((100, "corrupt", "damaged TIFF"),  # preamble is 'II*\0'
                                 (600, "corrupt", "(truncated|damaged)"),
                                 (3000, "corrupt", "(truncated|damaged)"),
                                 (20000, "corrupt", "truncated"),
                                 (dcm_size - 2, "corrupt", "truncated")):
        b.upscale(f"dcm_cut_{cut}", lambda d, c=cut: F.truncated(F.DICOM, d / "cut.dcm", c),
                  expect, problem, out_name="sr.dcm")


def _content_cases(b: _Builder) -> None:
    rng = b.rng
    b.upscale("tif_header_1e6x1e6", lambda d: F.huge_header_tiff(d / "huge.tif"), "data",
              "1000000 x 1000000", out_name="sr.tif",
              note="a few hundred bytes declaring 10^12 pixels: refused before any allocation")
    b.upscale("png_header_1e6x1e6", lambda d: F.huge_header_png(d / "huge.png"), "data",
              "too large")
    b.upscale("complex_tif", lambda d: F.write_tiff(
        d / "complex.tif", (rng.normal(size=(1, 16, 16)) + 1j).astype(np.complex64)),
        "data", "pixel type complex64", out_name="sr.tif")
    b.upscale("bool_zarr", lambda d: F.zarr_image(
        d / "mask.zarr", rng.integers(0, 2, (1, 16, 16)).astype(bool)), "data",
        "pixel type bool", out_name="sr.zarr")
    b.upscale("complex_zarr", lambda d: F.zarr_image(
        d / "c.zarr", (rng.normal(size=(1, 16, 16)) * 1j).astype(np.complex128)), "data",
        "pixel type complex128", out_name="sr.zarr")
    b.upscale("broken_zarr_json", lambda d: F.broken_zarr(d / "broken.zarr"), "corrupt",
              "cannot open the Zarr store", out_name="sr.zarr")
    b.upscale("all_nodata_tif", lambda d: F.write_tiff(
        d / "nodata.tif", np.zeros((1, 24, 24), np.uint16), nodata=0), "data",
        "no valid pixels", out_name="sr.tif")
    b.upscale("all_nan_tif", lambda d: F.write_tiff(
        d / "nan.tif", np.full((1, 24, 24), np.nan, np.float32)), "data", "no valid pixels",
        out_name="sr.tif")

    def nan_inf(d: Path) -> Path:
        pix = rng.normal(100, 10, (1, 24, 24)).astype(np.float32)
        pix[0, 3, 4], pix[0, 10, 10], pix[0, 20, 2] = np.nan, np.inf, -np.inf
        return F.write_tiff(d / "nan_inf.tif", pix)

    b.upscale("float_nan_inf_tif", nan_inf, "ok", "", out_name="sr.tif",
              note="NaN and +-inf are invalid pixels: output NaN there, the rest succeeds")
    b.upscale("image_1x1", lambda d: F.png_of(d / "one.png", np.full((1, 1), 9, np.uint8)),
              "data", "1 x 1 pixels")
    b.upscale("image_3x3", lambda d: F.png_of(
        d / "three.png", rng.integers(0, 256, (3, 3), dtype=np.uint8)), "ok", "")
    b.upscale("smaller_than_crop", lambda d: F.copy(F.PNG, d / "small.png"), "ok", "",
              extra=("--set", "train.crop_size=128"),
              note="40 x 48 image, 128 px crops: crops shrink to the image")
    b.upscale("constant_image", lambda d: F.png_of(
        d / "flat.png", np.full((20, 24), 77, np.uint8)), "ok", "")
    b.upscale("jpeg_cut", lambda d: F.truncated(F.jpeg_of(d.parent / "full.jpg", rng),
                                                d / "cut.jpg", 300), "corrupt",
              "([Tt]runcated|cannot decode)")


def _dicom_cases(b: _Builder) -> None:
    b.upscale("dcm_no_pixel_data", lambda d: F.copy(F.DICOM_NO_PIXELS, d / "report.dcm"),
              "data", "no PixelData", out_name="sr.dcm")
    b.upscale("dcm_unsupported_syntax", lambda d: F.dicom_edit(
        d / "mpeg2.dcm", file_meta__TransferSyntaxUID="1.2.840.10008.1.2.4.100"), "format",
        "transfer syntax .*cannot be decoded", out_name="sr.dcm")
    b.upscale("dcm_corrupt_rle", lambda d: F.corrupt_rle(d / "bad_rle.dcm", b.rng), "corrupt",
              "cannot be decoded", out_name="sr.dcm")
    b.upscale("dcm_bits_allocated_12", lambda d: F.dicom_edit(
        d / "bits12.dcm", BitsAllocated=12), "data", "BitsAllocated 12", out_name="sr.dcm")
    b.upscale("dcm_rows_60000", lambda d: F.dicom_edit(
        d / "tall.dcm", Rows=60000, Columns=60000), "corrupt", "truncated pixel data",
        out_name="sr.dcm")
    b.upscale("series_mixed_sizes", lambda d: F.dicom_series(
        d / "mixed", [0.0, 5.0, 10.0], sizes=[128, 64, 128], tag="mixed"), "data",
        "all slices must match", out_name="sr_series")
    b.upscale("series_missing_slice", lambda d: F.dicom_series(
        d / "gap", [0.0, 5.0, 10.0, 20.0, 25.0], tag="gap"), "data",
        "irregular slice spacing.*missing slice", out_name="sr_series")


def _kernel_cases(b: _Builder) -> None:
    def kernel_case(name: str, make: Callable[[Path], Path], expect: str, problem: str) -> None:
        made: dict[str, Path] = {}

        def options(src: Path, out: Path) -> tuple[str, ...]:
            made["k"] = make(src)
            return ("--kernel", str(made["k"]))

        b.with_good_input(name, expect, problem, options=options,
                          named=lambda src, out: made["k"])

    kernel_case("kernel_3d", lambda d: F.kernel_npy(d / "k.npy", np.ones((3, 3, 3))), "kernel",
                "2-D")
    kernel_case("kernel_zeros", lambda d: F.kernel_npy(d / "k.npy", np.zeros((5, 5))), "kernel",
                "sum")
    kernel_case("kernel_nan", lambda d: F.kernel_npy(
        d / "k.npy", np.where(np.eye(5) > 0, np.nan, 1.0)), "kernel", "NaN")
    kernel_case("kernel_mat_wrong_name", lambda d: F.kernel_mat(
        d / "k.mat", psf=np.ones((5, 5)) / 25), "kernel", "Kernel")
    kernel_case("kernel_missing", lambda d: d / "nope.npy", "input", "not found")
    kernel_case("kernel_is_folder", lambda d: _mkdir(d / "k.npy"), "input", "is a folder")
    kernel_case("kernel_txt", lambda d: F.text_file(d / "k.txt"), "kernel", "unsupported kind")
    kernel_case("kernel_pickled_npy", lambda d: _pickled_npy(d / "k.npy"), "kernel",
                "not a readable .npy")
    b.with_good_input("kernel_sigma_zero", "kernel", "--kernel-sigma 0.0: must be > 0",
                      options=lambda s, o: ("--kernel-sigma", "0"), named=lambda s, o: None)


def _config_cases(b: _Builder) -> None:
    def opt(name: str, extra: tuple[str, ...], problem: str, expect: str = "usage",
            file_text: str | None = None) -> None:
        def options(src: Path, out: Path) -> tuple[str, ...]:
            if file_text is None:
                return extra
            cfg = src / "config.yaml"
            cfg.write_text(file_text)
            return ("--config", str(cfg), *extra)

        b.with_good_input(name, expect, problem, options=options,
                          named=(lambda s, o: s / "config.yaml") if file_text else
                          (lambda s, o: None))

    opt("cfg_unknown_key", ("--set", "train.bogus=1"), "unknown config key 'train.bogus'")
    opt("cfg_wrong_type", ("--set", "train.max_iters=many"), "'train.max_iters'.*integer")
    opt("cfg_zero_depth", ("--set", "net.depth=0"), "'net.depth'")
    opt("cfg_file_unknown_key", (), "unknown config key 'trian'",
        file_text="trian:\n  max_iters: 3\n")
    opt("cfg_file_wrong_type", (), "'net.kernel_size'.*integer",
        file_text="net:\n  kernel_size: big\n")
    opt("cfg_set_bad_yaml", ("--set", "train.max_iters=[1,"), "not valid YAML")
    opt("cfg_file_python_tag", (), "not valid YAML",
        file_text="train: !!python/object/apply:os.system ['echo pwned']\n")
    opt("cfg_file_not_mapping", (), "mapping", file_text="- 1\n- 2\n")
    opt("cfg_unknown_preset", ("--preset", "nonsense"), "unknown preset 'nonsense'")
    opt("scale_zero", ("--scale", "0"), "--scale 0")
    opt("scale_negative", ("--scale", "-2"), "--scale -2")
    opt("scale_nan", ("--scale", "nan"), "--scale nan")
    opt("tile_huge", ("--tile", "1000000"), "--tile 1000000")
    opt("halo_negative", ("--halo", "-3"), "--halo -3")
    opt("bands_zero", ("--bands", "0"), "--bands '0'")
    opt("device_unknown", ("--device", "tpu"), "--device 'tpu'")
    opt("device_missing_gpu", ("--device", "cuda:99"), "--device 'cuda:99'")

    def cfg_dir(src: Path, out: Path) -> tuple[str, ...]:
        return ("--config", str(_mkdir(src / "cfg.yaml")))

    b.with_good_input("cfg_is_folder", "usage", "(Is a directory|folder)", options=cfg_dir,
                      named=lambda s, o: s / "cfg.yaml")
    b.with_good_input("bands_out_of_range", "data", "band index 8 out of range",
                      options=lambda s, o: ("--bands", "9"))


def _output_cases(b: _Builder) -> None:
    def out_opts(path: Callable[[Path, Path], Path], *more: str):
        return lambda s, o: ("__OUT__", str(path(s, o)), *more)

    def blocker(s: Path, o: Path) -> Path:
        (o / "afile").write_text("x")
        return o / "afile" / "sr.png"

    b.with_good_input("out_parent_is_file", "write", "not a folder",
                      options=out_opts(blocker), named=lambda s, o: o / "afile" / "sr.png")
    b.with_good_input("out_parent_missing", "write", "does not exist",
                      options=out_opts(lambda s, o: o / "no" / "sr.png"),
                      named=lambda s, o: o / "no" / "sr.png")
    proc = Path("/proc") / f"zssr-corpus-{os.getpid()}.png"
    b.with_good_input("out_not_writable", "write", "not writable",
                      options=out_opts(lambda s, o: proc), named=lambda s, o: proc,
                      note="/proc refuses new files even for root (chmod would not)")
    b.with_good_input("out_equals_input", "write", "equals the input",
                      options=out_opts(lambda s, o: s / F.PNG.name),
                      named=lambda s, o: s / F.PNG.name)

    def existing(s: Path, o: Path) -> Path:
        (o / "sr.png").write_bytes(b"previous result")
        return o / "sr.png"

    b.with_good_input("out_exists", "write", "already exists", options=out_opts(existing),
                      named=lambda s, o: o / "sr.png")
    b.with_good_input("out_suffix_jpg", "format", "cannot write .jpg",
                      options=out_opts(lambda s, o: o / "sr.jpg"),
                      named=lambda s, o: o / "sr.jpg")
    b.upscale("out_png_of_float", lambda d: F.write_tiff(
        d / "float.tif", b.rng.normal(size=(1, 24, 24)).astype(np.float32)), "data",
        "PNG stores 8- or 16-bit", named=b.root / "out_png_of_float" / "out" / "sr.png",
        batch=False, note="float32 -> PNG: refused before training")
    b.with_good_input("history_folder_missing", "write", "does not exist",
                      options=lambda s, o: ("--history", str(o / "no" / "h.json")),
                      named=lambda s, o: o / "no" / "h.json")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _pickled_npy(path: Path) -> Path:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return path


def build_corpus(root: str | Path, *, seed: int = 0) -> list[Case]:
    """Write every case under ``root`` (which must be empty or absent); return the records."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root}: corpus folder must be empty")
    b = _Builder(root, seed)
    for group in (_input_cases, _truncation_cases, _content_cases, _dicom_cases, _kernel_cases,
                  _config_cases, _output_cases):
        group(b)
    names = [c.name for c in b.cases]
    if len(set(names)) != len(names):
        raise ValueError("duplicate case names")
    return b.cases


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: make_corpus.py EMPTY_FOLDER", file=sys.stderr)
        return 2
    for case in build_corpus(argv[0]):
        print(f"{case.name:28s} {case.expect:8s} {' '.join(case.args[:2])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

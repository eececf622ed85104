"""Security checks: no unsafe loaders or shells in the source, outputs confined, DICOM
patient data neither added nor (with ``--deidentify``) kept.

The source checks parse every module with :mod:`ast` (so docstrings and
comments that *mention* ``yaml.load`` do not count) and look at the calls.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import require

from io_adapters.base import check_output_path
from io_adapters.errors import WriteError

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("zssr", "io_adapters", "pipeline", "configs", "workflows")
DATA = Path(__file__).resolve().parent / "data"
# dynamic imports allowed only here: the DICOM plugin hook (a fixed module name) and
# user steps named explicitly in a config (pipeline/steps/base.py)
IMPORT_ALLOWED = {"io_adapters/detect.py", "pipeline/steps/base.py"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader"}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES if (REPO / pkg).is_dir()
                  for p in (REPO / pkg).rglob("*.py"))


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def call_problems(call: ast.Call) -> list[str]:
    """What is unsafe about one call (empty: nothing)."""
    name = _dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    bad = []
    if name in ("eval", "exec", "compile", "os.system", "os.popen"):
        bad.append(f"{name}()")
    if _is_const(_kw(call, "shell"), True):
        bad.append(f"{name}(shell=True)")
    if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
        bad.append(f"{name}()")
    if name == "yaml.load":
        loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        if _dotted(loader).rsplit(".", 1)[-1] not in SAFE_LOADERS:
            bad.append("yaml.load() without SafeLoader")
    if last in ("load", "loads") and name.split(".")[0] in ("pickle", "cPickle", "dill",
                                                             "cloudpickle", "marshal", "joblib",
                                                             "shelve"):
        bad.append(f"{name}()")
    if name == "torch.load" and not _is_const(_kw(call, "weights_only"), True):
        bad.append("torch.load() without weights_only=True")
    if name in ("np.load", "numpy.load") and not _is_const(_kw(call, "allow_pickle"), False):
        bad.append(f"{name}() without allow_pickle=False")
    return bad


def scan(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(REPO))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found += [f"{rel}:{node.lineno}: {p}" for p in call_problems(node)]
            name = _dotted(node.func)
            if name in ("importlib.import_module", "__import__") and rel not in IMPORT_ALLOWED:
                found.append(f"{rel}:{node.lineno}: dynamic import {name}()")
        elif isinstance(node, ast.ImportFrom | ast.Import):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            if any(m.split(".")[0] in ("pickle", "dill", "cloudpickle", "marshal") for m in mods):
                found.append(f"{rel}:{node.lineno}: imports {mods}")
    return found


def test_source_has_no_unsafe_calls():
    sources = _sources()
    assert len(sources) > 30
    problems = [p for src in sources for p in scan(src)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("code", [
    "yaml.load(text)", "yaml.load(text, Loader=yaml.Loader)", "yaml.full_load(t)",
    "subprocess.run(cmd, shell=True)", "eval(cfg['x'])", "exec(code)", "pickle.load(fh)",
    "torch.load(p)", "torch.load(p, weights_only=False)", "np.load(p, allow_pickle=True)",
    "np.load(p)", "os.system('ls')",
])
def test_scanner_catches(code):
    call = ast.parse(code).body[0].value
    assert call_problems(call)


@pytest.mark.parametrize("code", [
    "yaml.safe_load(text)", "yaml.load(text, Loader=yaml.SafeLoader)", "model.eval()",
    "torch.load(p, map_location='cpu', weights_only=True)", "np.load(p, allow_pickle=False)",
    "subprocess.run(['ls'], check=True)",
])
def test_scanner_allows(code):
    assert not call_problems(ast.parse(code).body[0].value)


# -- output paths ---------------------------------------------------------------------------


def test_output_path_confined_to_root(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert check_output_path(root / "a.png", root=root) == (root / "a.png").resolve()
    with pytest.raises(WriteError, match="outside the output folder"):
        check_output_path(root / ".." / "escape.png", root=root)
    with pytest.raises(WriteError, match="outside the output folder"):
        check_output_path(Path("/tmp/elsewhere.png"), root=root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(WriteError, match="outside the output folder"):
        check_output_path(root / "link" / "x.png", root=root)


def test_output_path_rules(tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(b"x")
    with pytest.raises(WriteError, match="equals the input"):
        check_output_path(tmp_path / "." / "in.png", inputs=(src,))
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="is not a folder"):
        check_output_path(tmp_path / "file" / "o.png")
    with pytest.raises(WriteError, match="does not exist"):
        check_output_path(tmp_path / "no" / "o.png")
    with pytest.raises(WriteError, match="not writable"):
        check_output_path(Path("/proc/zssr-probe.png"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".zssr-probe")]


def test_output_folder_without_write_permission(tmp_path):
    """A folder the process may not write to.  Root ignores mode bits, so as root (CI) the
    folder is a read-only tmpfs mount instead; a mount that fails fails the test in CI."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                              capture_output=True, timeout=30, check=False)
        require(done.returncode == 0, f"a read-only tmpfs mount ({done.stderr!r})")
    else:
        ro.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="not writable"):
            check_output_path(ro / "o.png")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False, timeout=30)
        else:
            ro.chmod(0o755)


@pytest.mark.parametrize("template", ["../{stem}{suffix}", "{stem}/../../x{suffix}",
                                      "/etc/{stem}{suffix}", "."])
def test_batch_name_template_cannot_escape(tmp_path, template):
    jobspec = pytest.importorskip("workflows.jobspec")
    from pipeline.errors import UsageError

    with pytest.raises(UsageError, match="(not inside the output folder|name template)"):
        jobspec.job_from_dict({"inputs": ["a/*.tif"], "output": "out", "scale": 2,
                               "name": template}, base=tmp_path)


# -- DICOM patient data ---------------------------------------------------------------------

STUDY_KEYWORDS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                  "ReferringPhysicianName", "StudyDescription", "PhysiciansOfRecord",
                  "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
                  "PatientAge", "PatientSize", "PatientWeight", "Occupation",
                  "AdditionalPatientHistory")


def _write_derived(src: Path, out: Path, **options) -> Path:
    from io_adapters.detect import open_reader, open_writer, scale_metadata

    with open_reader(src) as reader:
        meta = scale_metadata(reader.meta, 2)
        with open_writer(out, meta, inputs=(src,), **options) as writer:
            for f in range(reader.meta.frames):
                up = np.repeat(np.repeat(reader.read(frame=f), 2, axis=1), 2, axis=2)
                writer.write(up, _full(meta), frame=f)
    return out


def _full(meta):
    from rasterio.windows import Window

    return Window(0, 0, meta.cols, meta.rows)


def _patient_study(ds: pydicom.Dataset) -> dict[str, object]:
    out = {str(e.tag): str(e.value) for e in ds if e.tag.group == 0x0010}
    out.update({k: str(ds.get(k)) for k in STUDY_KEYWORDS if k in ds})
    return out


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "series"])
def test_dicom_output_keeps_exactly_the_patient_and_study_attributes(tmp_path, name):
    src = DATA / "dicom" / name
    out = _write_derived(src, tmp_path / ("sr" if src.is_dir() else "sr.dcm"))
    pairs = ([(src, out)] if src.is_file() else
             [(s, out / s.name) for s in sorted(src.iterdir())])
    for s, o in pairs:
        before, after = pydicom.dcmread(s), pydicom.dcmread(o)
        assert _patient_study(after) == _patient_study(before)
        assert "PatientIdentityRemoved" not in after


def _all_keywords(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()
    ds.walk(lambda d, e: found.add(e.keyword or str(e.tag)))
    return found


@pytest.mark.parametrize("name", ["CT_small.dcm", "series"])
def test_deidentify_removes_patient_attributes(tmp_path, name):
    from io_adapters.deidentify import BASIC_PROFILE

    emptied = [k for k, a in BASIC_PROFILE.items() if a == "Z"]
    removed = {k for k, a in BASIC_PROFILE.items() if a == "X"}

    src = DATA / "dicom" / name
    out = _write_derived(src, tmp_path / ("sr" if src.is_dir() else "sr.dcm"), deidentify=True)
    plain = _write_derived(src, tmp_path / ("p" if src.is_dir() else "p.dcm"))
    files = [out] if out.is_file() else sorted(out.iterdir())
    originals = [src] if src.is_file() else sorted(src.iterdir())
    studies: set[tuple[str, str, str]] = set()
    for o, s in zip(files, originals, strict=True):
        ds, orig = pydicom.dcmread(o), pydicom.dcmread(s)
        assert orig.PatientName and orig.PatientID  # the fixture does carry identity
        for k in emptied:
            assert k not in ds or not ds[k].value, k
        assert not (_all_keywords(ds) & removed)
        assert not [e for e in ds.iterall() if e.tag.is_private]
        assert ds.PatientIdentityRemoved == "YES"
        assert "PS3.15" in ds.DeidentificationMethod
        assert ds.StudyInstanceUID and ds.StudyInstanceUID != orig.StudyInstanceUID  # "U"
        studies.add((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID))
    assert len(studies) == 1  # a series folder stays one series of one study
    ref = pydicom.dcmread(plain if plain.is_file() else sorted(plain.iterdir())[0])
    got = pydicom.dcmread(files[0])
    assert np.array_equal(got.pixel_array, ref.pixel_array)
    assert got.PixelSpacing == ref.PixelSpacing


def test_deidentify_docstring_says_it_is_not_a_profile():
    import io_adapters.deidentify as deid

    assert "Limits, said plainly" in deid.__doc__  # burned-in text etc. not inspected
    assert "PS3.15" in deid.__doc__


def test_cli_deidentify_flag(tmp_path):
    from pipeline.cli.main import main

    src = tmp_path / "ct.dcm"
    src.write_bytes((DATA / "dicom" / "CT_small.dcm").read_bytes())
    out = tmp_path / "sr.dcm"
    tiny = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
            "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16"]
    assert main(["upscale", str(src), str(out), "--scale", "2", "--deidentify", "-q",
                 *tiny]) == 0
    ds = pydicom.dcmread(out)
    assert not ds.PatientName and not ds.PatientID and ds.PatientIdentityRemoved == "YES"
    assert (ds.Rows, ds.Columns) == (256, 256)


def test_deidentify_applies_to_dicom_outputs_only():
    from pipeline.cli.cmd_upscale import dicom_writer_options

    assert dicom_writer_options(Path("a/sr.dcm"), True) == {"deidentify": True}
    assert dicom_writer_options(Path("a/series_out"), True) == {"deidentify": True}
    assert dicom_writer_options(Path("a/sr.tif"), True) == {}  # holds no patient attributes
    assert dicom_writer_options(Path("a/sr.dcm"), False) == {}

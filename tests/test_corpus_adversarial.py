"""The adversarial corpus through the real CLI (``tests/corpus/adversarial.py``, issue 20).

Every case runs its command (``zssr upscale``, ``run``, ``batch`` or ``eval``) and
:func:`adv_check.problems` must find nothing: the documented exit code, one error
line without a traceback (a ``FAILED`` line for exit 1), no input byte changed,
nothing created or changed outside the output folder, no link target touched and
no planted link replaced, nothing partial or temporary left in the output folder.
The cheap cases run in this process, one test per class; the stop-signal cases run
side by side in child processes (SIGTERM / SIGHUP while a partial output exists).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus"))
from adv_check import problems, run_adv, run_signalled  # noqa: E402
from adversarial import CLASSES, COMMANDS, AdvCase, build_adversarial  # noqa: E402

from pipeline.errors import EXIT  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="links, FIFOs and signals are tested on Linux")
REQUIRED = (  # scenarios the issue names, by case-name prefix
    "png_out_is_input", "series_out_is_study_overwrite", "zarr_out_is_outer_zarr",
    "history_is_input", "eval_json_is_hr_image", "history_is_batch_state", "tpl_name_onto_input",
    "tpl_onto_state", "tpl_onto_lock", "tpl_into_run_dir", "tpl_regenerate_in_place",
    "link_output_png_dangling", "link_output_png_to_sentinel_ow", "link_temporary_",
    "link_output_lock", "link_batch_lock", "link_batch_state", "link_run_outputs_",
    "link_upscale_stac_item", "link_run_stac_item", "link_run_collection",
    "link_run_through_plane", "link_batch_stac_item", "link_batch_collection",
    "lr_1e6", "diverge_", "cfg_laughs_", "cfg_fifo_", "cfg_dev_zero_", "cfg_latin1_",
    "cfg_set_inf", "cfg_set_nan", "cfg_user_step_", "huge_sparse_tiff_1e5", "huge_zarr_3e5",
    "huge_png8_1e5", "bound_depth_", "bound_width_", "bound_kernel_size_", "scale_1_3333_",
    "scheduler_ftp_", "name_nul", "name_256_bytes", "dcm_spacing_one_value",
    "series_orientation_zero", "newline_in_", "sigterm_upscale_cog", "sigterm_upscale_zarr",
    "sigterm_upscale_dicom", "sighup_", "sigterm_run", "sigterm_batch")


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory) -> list[AdvCase]:
    return build_adversarial(tmp_path_factory.mktemp("adversarial") / "cases", seed=0)


def _failures(outcomes) -> dict[str, list[str]]:
    return {o.case.name: bad for o in outcomes if (bad := problems(o))}


def test_adversarial_corpus_covers_the_issue(adversarial):
    names = [c.name for c in adversarial]
    missing = [p for p in REQUIRED if not any(n.startswith(p) for n in names)]
    assert not missing
    per_class = Counter(c.klass for c in adversarial)
    assert set(per_class) == set(CLASSES)
    assert min(per_class.values()) >= 4, per_class  # several variants of each class
    assert {c.command for c in adversarial} == set(COMMANDS)
    for klass in ("output_onto_input", "symlink", "hostile_config", "config_bounds",
                  "huge_raster", "diverged"):
        assert {c.command for c in adversarial if c.klass == klass} == set(COMMANDS), klass
    for c in adversarial:
        assert c.expect in EXIT and (c.expect == "ok" or c.message), c.name
        assert c.out_dir.is_relative_to(c.root), c.name


def _digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[str(p.relative_to(root))] = "-> " + os.readlink(p).replace(str(root), "ROOT")
        elif stat.S_ISREG(st.st_mode):
            data = p.read_bytes().replace(str(root).encode(), b"ROOT")  # job files name paths
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_adversarial_corpus_is_seeded(tmp_path):
    a = build_adversarial(tmp_path / "a", seed=5)
    b = build_adversarial(tmp_path / "b", seed=5)
    assert [c.name for c in a] == [c.name for c in b]
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


@pytest.mark.parametrize("klass", [k for k in CLASSES if k != "stop_signal"])
def test_adversarial_class(adversarial, klass):
    """Every case of one class: exit code, one line, nothing outside, no link followed."""
    cases = [c for c in adversarial if c.klass == klass]
    assert cases
    failures = _failures(run_adv(c) for c in cases)
    assert not failures, json.dumps(failures, indent=1)


def test_adversarial_stop_signals(adversarial):
    """SIGTERM / SIGHUP while a COG, Zarr or DICOM output, a run or a batch is being
    written: exit 143 / 129, one line, no partial output, inputs unchanged."""
    cases = [c for c in adversarial if c.klass == "stop_signal"]
    assert {c.command for c in cases} == {"upscale", "run", "batch"}
    assert {c.expect for c in cases} == {"terminated", "hangup"}
    failures = _failures(run_signalled(cases))
    assert not failures, json.dumps(failures, indent=1)

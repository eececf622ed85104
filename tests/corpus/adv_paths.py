"""Adversarial cases about paths: outputs onto inputs, side outputs, batch names, links,
file names (the classes ``output_onto_input``, ``side_output``, ``batch_template``,
``symlink``, ``file_name`` of :mod:`adversarial`)."""

from __future__ import annotations

from pathlib import Path

import _files as F
from _adv_base import RUN_FILES, SYNC, TINY, TOKEN, Builder, esc

__all__ = ["PATH_GROUPS"]


# ------------------------------------------------------------------ output onto input


def _output_onto_input(b: Builder) -> None:
    k = "output_onto_input"
    for overwrite in ((), ("--overwrite",)):
        tag = "_overwrite" if overwrite else ""
        c, i, o = b.case(f"png_out_is_input{tag}")
        a = b.png(i / "a.png")
        b.upscale(c.name, k, a, a, "write", esc(a) + ".*equals the input", *overwrite)
        c, i, o = b.case(f"png_out_is_its_folder{tag}")
        a = b.png(i / "a.png")
        b.png(i / "neighbour.png")
        b.upscale(c.name, k, a, i, "write", esc(i) + ".*(folder holding the input|exists)",
                  *overwrite)
        c, i, o = b.case(f"series_out_is_study{tag}")
        series = F.copy(F.DATA / "dicom" / "series", i / "study" / "series1")
        b.png(i / "study" / "neighbour.png")
        b.upscale(c.name, k, series, i / "study", "write",
                  "study.*(folder holding the input|exists)", *overwrite)
        c, i, o = b.case(f"series_out_inside_series{tag}")
        series = F.copy(F.DATA / "dicom" / "series", i / "series1")
        b.upscale(c.name, k, series, series / "IM_a.dcm", "write",
                  "IM_a.dcm.*lies inside the input", *overwrite)
        c, i, o = b.case(f"zarr_out_is_outer_zarr{tag}")
        outer = b.zarr(i / "outer.zarr")
        inner = b.zarr(outer / "inner.zarr")
        b.upscale(c.name, k, inner, outer, "write",
                  "outer.zarr.*(folder holding the input|exists)", *overwrite)
        c, i, o = b.case(f"zarr_out_is_inner_zarr{tag}")
        outer = b.zarr(i / "outer.zarr")
        b.zarr(outer / "inner.zarr")
        b.upscale(c.name, k, outer, outer / "inner.zarr", "write",
                  "inner.zarr.*lies inside the input", *overwrite)
    c, i, o = b.case("png_out_is_cwd_dot")
    a = b.png(i / "a.png")
    b.upscale(c.name, k, a, i / ".", "write", "(folder holding the input|exists)",
              "--overwrite", note="'zssr upscale a.png . --overwrite' once emptied the folder")
    # zssr run: the run folder holds, equals or lies inside an input
    c, i, o = b.case("run_out_is_input_folder")
    a = b.png(i / "a.png")
    b.run(c.name, k, (a,), i, "write", esc(i) + ".*folder holding the input")
    c, i, o = b.case("run_out_inside_zarr")
    z = b.zarr(i / "in.zarr")
    b.run(c.name, k, (z,), z / "run", "write", "run.*lies inside the input")
    c, i, o = b.case("run_out_inside_series")
    series = F.copy(F.DATA / "dicom" / "series", i / "series1")
    b.run(c.name, k, (series,), series / "run", "write", "run.*lies inside the input")
    c, i, o = b.case("run_out_is_input_overwrite")
    a = b.png(i / "a.png")
    b.run(c.name, k, (a,), a, "write", "a.png.*(equals the input|not a folder|exists)",
          "--overwrite")
    # zssr batch: the output folder lies inside an input store
    c, i, o = b.case("batch_output_inside_zarr")
    z = b.zarr(i / "in.zarr")
    b.batch(c.name, k, b.job(c, inputs=[str(z)], output=str(z / "sr")), "usage",
            "lies inside the input", out_dir=z / "sr")
    c, i, o = b.case("batch_output_inside_series")
    series = F.copy(F.DATA / "dicom" / "series", i / "series1")
    b.batch(c.name, k, b.job(c, inputs=[str(series)], output=str(series / "sr")), "usage",
            "lies inside the input", out_dir=series / "sr")
    # zssr eval: --json inside, equal to or around the HR folder
    for name, target, problem in (("eval_json_is_hr_image", "hr/a.png", "lies inside the input"),
                                  ("eval_json_is_hr", "hr", "equals the input"),
                                  ("eval_json_inside_hr", "hr/sub/r.json", "inside the input"),
                                  ("eval_json_holds_hr", ".", "folder holding the input")):
        c, i, o = b.case(name)
        b.png(i / "hr" / "a.png", side=(24, 24))
        b.eval(c.name, k, i / "hr", "write", problem, "--json", i / target)


# ------------------------------------------------------------------------ side outputs


def _side_outputs(b: Builder) -> None:
    k = "side_output"

    def history(name: str, target, problem: str, *, make=None, expect: str = "write") -> None:
        c, i, o = b.case(name)
        a = b.png(i / "a.png")
        path = target(i, o, a)
        if make is not None:
            make(path)
        b.upscale(name, k, a, o / "sr.png", expect, problem, "--history", path,
                  inputs=(i, *((path,) if make else ())))

    history("history_is_input", lambda i, o, a: a, "a.png.*equals the input")
    history("history_is_output", lambda i, o, a: o / "sr.png", "sr.png.*the output")
    history("history_inside_input_folder", lambda i, o, a: i, "folder holding the input")
    history("history_is_batch_state", lambda i, o, a: o / ".zssr-batch-state.json",
            r"\.zssr-batch-state\.json.*control file",
            make=lambda p: p.write_text('{"version": 1, "inputs": {}}'))
    history("history_is_batch_lock", lambda i, o, a: o / ".zssr-batch.lock",
            r"\.zssr-batch\.lock.*control file", make=lambda p: p.write_bytes(b""))
    history("history_is_run_manifest", lambda i, o, a: o / "run" / "manifest.jsonl",
            r"manifest\.jsonl.*control file", make=_fake_run_folder)
    history("history_is_output_lock", lambda i, o, a: o / ".sr.png.lock",
            r"\.sr\.png\.lock.*control file")
    history("history_is_foreign_json", lambda i, o, a: o / "notes.json",
            "notes.json.*not a JSON document", make=lambda p: p.write_text("my notes"))
    history("history_is_folder", lambda i, o, a: o / "hist", "hist",
            make=lambda p: (p.mkdir(), (p / "keep.txt").write_text("mine")))

    def eval_json(name: str, target, problem: str, make) -> None:
        c, i, o = b.case(name)
        b.png(i / "hr" / "a.png", side=(24, 24))
        path = target(o)
        make(path)
        b.eval(name, k, i / "hr", "write", problem, "--json", path, inputs=(i, path))

    eval_json("eval_json_is_batch_state", lambda o: o / ".zssr-batch-state.json",
              r"\.zssr-batch-state\.json.*control file",
              lambda p: p.write_text('{"version": 1, "inputs": {}}'))
    eval_json("eval_json_is_run_lock", lambda o: o / "run" / ".lock", r"\.lock.*control file",
              _fake_run_folder)
    eval_json("eval_json_is_foreign_json", lambda o: o / "notes.json",
              "notes.json.*not a JSON document", lambda p: p.write_text("{broken"))


def _fake_run_folder(path: Path) -> None:
    """A run folder as ``zssr run`` leaves it (lock + manifest) around ``path``."""
    run = path.parent
    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_bytes(b"")
    (run / "manifest.jsonl").write_text('{"state": "finalized"}\n')


# ----------------------------------------------------------------------- batch templates


def _batch_templates(b: Builder) -> None:
    k = "batch_template"
    for name, template, problem in (
            ("tpl_name_onto_input", "{name}", "equals the input"),
            ("tpl_stem_png_onto_input", "{stem}.png", "equals the input"),
            ("tpl_onto_state", ".zssr-batch-state.json", "control file"),
            ("tpl_onto_lock", ".zssr-batch.lock", "control file"),
            ("tpl_into_run_dir", ".zssr-batch-run/{name}", "control file"),
            ("tpl_dotdot_onto_lock", "{stem}{suffix}.lock/../.zssr-batch.lock", "control file"),
            ("tpl_escapes_output", "../{name}", "not inside the output folder"),
            ("tpl_absolute", "/tmp/{name}", "not inside the output folder")):
        c, i, o = b.case(name)
        b.png(i / "a.png")
        b.png(i / "b.png")
        b.batch(name, k, b.job(c, inputs=[str(i / "*.png")], output=str(i), name=template),
                "usage", "name template.*" + problem, out_dir=i, inputs=(i / "a.png",
                                                                         i / "b.png"))
    c, i, o = b.case("tpl_regenerate_in_place")
    a = b.png(i / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*.png")], output=str(i)), "ok", "",
            out_dir=i, inputs=(a,), outputs=("a_x2.png",), repeat=2,
            note="output folder = input folder, default name, run twice: no a_x2_x2")
    c, i, o = b.case("tpl_two_inputs_one_name")
    b.png(i / "x" / "a.png")
    b.png(i / "y" / "a.png")
    b.batch(c.name, k, b.job(c, inputs=[str(i / "*" / "a.png")], output=str(o),
                             name="{name}"), "batch", "also the output of",
            outputs=("a.png",))


# ------------------------------------------------------------------------------- links


def _links(b: Builder) -> None:
    k = "symlink"

    def plant(link: Path, target: Path) -> Path:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return link

    for suffix in (".png", ".tif", ".zarr", ""):  # "" = a DICOM series folder
        for dangling in (True, False):
            for overwrite in ((), ("--overwrite",)) if not dangling else ((),):
                tag = "dangling" if dangling else "to_sentinel" + ("_ow" if overwrite else "")
                name = f"link_output{suffix.replace('.', '_') or '_series'}_{tag}"
                c, i, o = b.case(name)
                src = F.copy(F.DATA / "dicom" / "series", i / "series") if not suffix \
                    else b.png(i / "a.png")
                target = c / "outside" / ("created-there.png" if dangling else
                                          "folder" if suffix in ("", ".zarr") else
                                          "precious.png")
                out = plant(o / f"sr{suffix}", target)
                b.upscale(name, k, src, out, "write", "symbolic link", *overwrite)
    for tag_name, out_name, temp, target in (
            ("cog_tiles", "sr.tif", ".sr.tif.tiles-", "folder"),
            ("png_partial", "sr.png", ".sr.png.partial-", "precious.png"),
            ("dcm_tmp", "sr.dcm", ".sr.dcm.tmp-", "created-there.png"),
            ("zarr_partial", "sr.zarr", "sr.zarr.partial", "folder")):
        name = f"link_temporary_{tag_name}"
        c, i, o = b.case(name)
        src = F.copy(F.DICOM, i / "ct.dcm") if out_name.endswith(".dcm") else b.png(i / "a.png")
        link = o / (temp + TOKEN if temp.endswith("-") else temp)
        plant(link, c / "outside" / target)
        b.upscale(name, k, src, o / out_name, "ok", "", token=TOKEN, outputs=(out_name,),
                  removable=(link.name,),
                  note="a link at the writer's temporary name (a stale one, by its name): "
                       "removed, never followed; the target keeps its bytes")
    c, i, o = b.case("link_output_lock")
    plant(o / ".sr.png.lock", c / "outside" / "precious.png")
    b.upscale(c.name, k, b.png(i / "a.png"), o / "sr.png", "write", r"\.sr\.png\.lock")
    c, i, o = b.case("link_history")
    plant(o / "h.json", c / "outside" / "precious.png")
    b.upscale(c.name, k, b.png(i / "a.png"), o / "sr.png", "write", "h.json.*symbolic link",
              "--history", o / "h.json")
    c, i, o = b.case("link_history_temporary")
    plant(o / f".h.json.tmp-{TOKEN}", c / "outside" / "precious.png")
    b.upscale(c.name, k, b.png(i / "a.png"), o / "sr.png", "write",
              "every name tried was taken", "--history", o / "h.json", token=TOKEN,
              outputs=("sr.png",), note="the history is written after the work: the image "
              "output is complete, the side output refused")
    c, i, o = b.case("link_eval_json")
    b.png(i / "hr" / "a.png", side=(24, 24))
    plant(o / "r.json", c / "outside" / "created-there.png")
    b.eval(c.name, k, i / "hr", "write", "r.json.*symbolic link", "--json", o / "r.json")
    # the run folder of ``zssr run``
    for name, rel, target in (("link_run_outputs_file", "outputs/a_x2.png", "precious.png"),
                              ("link_run_outputs_dangling", "outputs/a_x2.png",
                               "created-there.png"),
                              ("link_run_outputs_folder", "outputs", "folder"),
                              ("link_run_lock", ".lock", "precious.png"),
                              ("link_run_manifest", "manifest.jsonl", "precious.png"),
                              ("link_run_config_tmp", f".config.yaml.tmp-{TOKEN}",
                               "precious.png"),
                              ("link_run_output_partial", f"outputs/.a_x2.png.partial-{TOKEN}",
                               "folder")):
        c, i, o = b.case(name)
        a = b.png(i / "a.png")
        plant(o / "run" / rel, c / "outside" / target)
        b.run(name, k, (a,), o / "run", "write", "symbolic link|every name tried", token=TOKEN)
    # STAC Items and Collections (--stac-item, stac_items) and through-plane outputs
    c, i, o = b.case("link_upscale_stac_item")
    plant(o / "sr.png.stac-item.json", c / "outside" / "precious.png")
    b.upscale(c.name, k, b.png(i / "a.png"), o / "sr.png", "write",
              r"sr\.png\.stac-item\.json.*symbolic link", "--stac-item")
    for name, rel, target in (("link_run_stac_item", "a_x2.png.stac-item.json", "precious.png"),
                              ("link_run_collection", "collection.json", "created-there.png")):
        c, i, o = b.case(name)
        plant(o / "run" / "outputs" / rel, c / "outside" / target)
        b.run(name, k, (b.png(i / "a.png"),), o / "run", "write", "symbolic link",
              "--stac-item")
    for name, target in (("link_run_through_plane", "folder"),
                         ("link_run_through_plane_dangling", "created-there.png")):
        c, i, o = b.case(name)
        series = F.copy(F.DATA / "dicom" / "series", i / "series")
        plant(o / "run" / "outputs" / "series_z2", c / "outside" / target)
        b.add(name, k, ("run", series, "--out", o / "run", "--through-plane", "--scale-z", "2",
                        *SYNC, *TINY), "write", "symbolic link", out_dir=o / "run",
              bookkeeping=RUN_FILES)
    for name, rel, expect in (("link_batch_stac_item", "a_x2.png.stac-item.json", "batch"),
                              ("link_batch_collection", "collection.json", "write")):
        c, i, o = b.case(name)
        b.png(i / "a.png")
        plant(o / rel, c / "outside" / "precious.png")
        b.batch(name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o), stac_items=True),
                expect, "symbolic link")
    # the control files of ``zssr batch``
    for name, rel, target, expect in (
            ("link_batch_lock", ".zssr-batch.lock", "precious.png", "write"),
            ("link_batch_state", ".zssr-batch-state.json", "precious.png", "write"),
            ("link_batch_run_dir", ".zssr-batch-run", "folder", "write"),
            ("link_batch_output", "a_x2.png", "precious.png", "batch"),
            ("link_batch_output_dangling", "a_x2.png", "created-there.png", "batch")):
        c, i, o = b.case(name)
        b.png(i / "a.png")
        plant(o / rel, c / "outside" / target)
        b.batch(name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o)), expect,
                "symbolic link|not written by this batch")


# --------------------------------------------------------------------------- file names


def _file_names(b: Builder) -> None:
    k = "file_name"
    for name, template, problem in (("name_nul", "{stem}\0x.png", "NUL"),
                                    ("name_256_bytes", "{stem}" + "a" * 300 + ".png",
                                     "at most 255"),
                                    ("name_256_bytes_utf8", "{stem}" + "é" * 130 + ".png",
                                     "at most 255"),
                                    ("name_long_folder", "x" * 256 + "/{name}", "at most 255")):
        c, i, o = b.case(name)
        b.png(i / "a.png")
        b.batch(name, k, b.job(c, inputs=[str(i / "*.png")], output=str(o), name=template),
                "usage", "name template.*" + problem)
    c, i, o = b.case("newline_in_output_name")
    b.upscale(c.name, k, b.png(i / "two\nlines.png"), o / "out\nx.zzz", "format",
              r"out\\nx\.zzz: cannot write \.zzz")
    c, i, o = b.case("newline_in_corrupt_input")
    bad = F.truncated(F.PNG, i / "cut\nhere.png", 200)
    b.upscale(c.name, k, bad, o / "sr.png", "corrupt", r"cut\\nhere\.png")
    c, i, o = b.case("newline_in_input_ok")
    b.upscale(c.name, k, b.png(i / "new\nline.png"), o / "sr.png", "ok", "",
              outputs=("sr.png",))
    c, i, o = b.case("newline_in_run_input")
    b.run(c.name, k, (bad := F.truncated(F.PNG, i / "cut\nhere.png", 200),
                      b.png(i / "good.png")), o / "run", "batch", r"cut\\nhere\.png",
          outputs=("outputs/good_x2.png",))
    del bad


PATH_GROUPS = (_output_onto_input, _side_outputs, _batch_templates, _links, _file_names)

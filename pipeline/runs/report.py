"""The run report: ``report.json`` and a self-contained ``report.html``.

Per image: the input and output crops side by side at the same zoom (the
input enlarged nearest-neighbour, so both show the same ground area), the
training loss / reconstruction error and learning-rate curves (matplotlib,
Agg backend, ``report_assets/<key>_curves.png``), the time split (train /
infer / write), the LR-consistency, PSNR/SSIM when a ground truth was given,
and the error of a failed image.  The HTML embeds every picture as a base64
``data:`` URI, so the file can be mailed or archived alone; ``report.json``
names the same pictures by their path relative to the run directory.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

from io_adapters.output_safety import UnsafeOutputError, make_dirs, write_bytes_atomic
from pipeline.runs.rundir import atomic_write_text

__all__ = ["write_report", "write_run_report", "plot_curves", "render_html"]

log = logging.getLogger(__name__)


def plot_curves(history: dict[str, Any], path: Path, *, title: str = "",
                root: Path | None = None) -> Path:
    """Loss and reconstruction error (left), learning rate (right) as a PNG.

    Written by the output rule: folders made below ``root`` (default: the PNG's
    folder), a link at any of them or at ``path`` refused, never followed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 2.8), dpi=96, layout="constrained")
    ax_loss, ax_lr = fig.subplots(1, 2)
    if history.get("losses"):
        ax_loss.plot(history["loss_iters"], history["losses"], lw=0.8, label="L1 loss")
    if history.get("reconstruction_errors"):
        ax_loss.plot(history["test_iters"], history["reconstruction_errors"], "o-", ms=3,
                     lw=1, label="reconstruction MSE")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("training loss", fontsize=9)
    if history.get("learning_rates"):
        ax_lr.step(history["test_iters"][:len(history["learning_rates"])],
                   history["learning_rates"], where="post", marker="o", ms=3)
        ax_lr.set_yscale("log")
    for it in history.get("lr_change_iters", []):
        ax_lr.axvline(it, color="0.7", lw=0.6)
    ax_lr.set_xlabel("iteration")
    ax_lr.set_title("learning rate", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    make_dirs(path.parent, root=path.parent if root is None else root)
    return write_bytes_atomic(path, buffer.getvalue())


def _data_uri(path: Path) -> str | None:
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        log.warning("report asset %s is missing", path)
        return None


def _fmt(value: Any, spec: str = ".2f", unit: str = "") -> str:
    if value is None:
        return "&ndash;"
    return f"{value:{spec}}{unit}"


def infer_s_per_mp(entry: dict[str, Any]) -> float | None:
    """Inference seconds per output megapixel of the tiles this run inferred (tiles
    finished by an earlier run took no time here); None when unknown."""
    mp, tiles = entry.get("output_mp"), entry.get("tiles", {})
    seconds = entry.get("seconds", {}).get("infer")
    if not mp or not tiles.get("total") or not tiles.get("inferred") or seconds is None:
        return None
    return seconds / (mp * tiles["inferred"] / tiles["total"])


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;
text-align:left;font-size:.9em}section{border-top:2px solid #ddd;margin-top:1.5em;
padding-top:.5em}.pair{display:flex;gap:1em;flex-wrap:wrap}.pair figure{margin:0}
.pair img{image-rendering:pixelated;width:320px;height:auto;border:1px solid #999}
figcaption{font-size:.8em;color:#555}.failed{color:#a00}.curves{max-width:100%}
code{font-size:.85em}
"""


def _kernel_figures(e: dict[str, Any]) -> list[tuple[str, str]]:
    """``(picture, label)`` of the estimated kernel, with its widths; with
    ``kernel_groups`` one per group, labelled with the group's bands."""
    kernel, assets = e.get("kernel", {}), e.get("assets", {})
    if "kernel" in assets:
        return [(assets["kernel"], f"estimated kernel: {kernel.get('description', '')}")]
    return [(g["asset"], f"estimated kernel, bands {','.join(map(str, g.get('bands', [])))}: "
             f"{g.get('description', '')}") for g in kernel.get("groups", []) if "asset" in g]


def _image_section(e: dict[str, Any], root: Path) -> str:
    esc = html.escape
    name = esc(str(e.get("name", e.get("key", "?"))))
    state = e.get("state", "?")
    parts = [f'<section id="{esc(str(e.get("key", "")))}"><h2>{name} '
             f'<small class="{"failed" if state == "failed" else ""}">{esc(state)}'
             f'{" (finished by an earlier run)" if e.get("skipped") else ""}</small></h2>',
             f'<p>input <code>{esc(str(e.get("input", "")))}</code>'
             + (f' &rarr; output <code>{esc(str(e["output"]))}</code>' if e.get("output")
                else "") + "</p>"]
    if state == "failed":
        parts.append(f'<p class="failed"><b>{esc(str(e.get("error_class")))}</b> '
                     f'(stage {esc(str(e.get("stage")))}): {esc(str(e.get("error")))}</p>')
    assets = e.get("assets", {})
    if "lr" in assets and "sr" in assets:
        zoom = e.get("crop", {}).get("zoom", e.get("scale"))
        figs = []
        for label, rel in (("input (nearest-neighbour x" + _fmt(zoom, "g") + ")", assets["lr"]),
                           ("super-resolved", assets["sr"])):
            uri = _data_uri(root / rel)
            if uri:
                figs.append(f'<figure><img alt="{esc(label)}" src="{uri}">'
                            f"<figcaption>{esc(label)}</figcaption></figure>")
        for rel, label in _kernel_figures(e):  # --kernel estimate: beside the crops
            uri = _data_uri(root / rel)
            if uri:
                figs.append(f'<figure><img class="kernel" alt="{esc(label)}" src="{uri}">'
                            f"<figcaption>{esc(label)}</figcaption></figure>")
        parts.append('<div class="pair">' + "".join(figs) + "</div>")
    if "curves" in assets:
        uri = _data_uri(root / assets["curves"])
        if uri:
            parts.append(f'<img class="curves" alt="training curves" src="{uri}">')
    sec, tiles = e.get("seconds", {}), e.get("tiles", {})
    rows = [("train / infer / write (s)", " / ".join(_fmt(sec.get(k), ".1f") for k in
                                                     ("train", "infer", "write"))),
            ("inference s per output MP", _fmt(infer_s_per_mp(e), ".2f")),
            ("iterations", _fmt(e.get("history", {}).get("iterations"), "d")),
            ("stop reason", esc(str(e.get("history", {}).get("stop_reason", "")))),
            ("warm-started", "yes (from the previous compatible image)"
             if e.get("history", {}).get("warm_started") else "no"),
            ("tiles total / skipped / inferred", " / ".join(
                _fmt(tiles.get(k), "d") for k in ("total", "skipped", "inferred"))),
            ("kernel", esc(e["kernel"].get("description", ""))) if "kernel" in e else None,
            ("LR-consistency", _fmt(e.get("lr_consistency_db"), ".2f", " dB")
             + (" (with the kernel above)" if "kernel" in e else "")),
            ("PSNR / SSIM", f'{_fmt(e.get("psnr"), ".2f", " dB")} / {_fmt(e.get("ssim"), ".4f")}')
            if "psnr" in e else None]
    if e.get("ground_truth_error"):
        rows.append(("ground truth", esc(e["ground_truth_error"])))
    parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>"
                                     for k, v in (r for r in rows if r)) + "</table>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(entries: list[dict[str, Any]], summary: dict[str, Any], root: Path) -> str:
    """The report page (self-contained: pictures inlined)."""
    esc = html.escape
    counts = summary.get("counts", {})
    head = "".join(f"<th>{esc(k)}</th>" for k in counts)
    vals = "".join(f"<td>{v}</td>" for v in counts.values())
    index = "".join(
        f'<tr><td><a href="#{esc(str(e.get("key", "")))}">{esc(str(e.get("name", "")))}</a></td>'
        f'<td class="{"failed" if e.get("state") == "failed" else ""}">'
        f'{esc(str(e.get("state")))}</td><td>{esc(str(e.get("error_class") or ""))}</td></tr>'
        for e in entries)
    body = "\n".join(_image_section(e, root) for e in entries)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ZSSR run report</title><style>{_CSS}</style></head><body>"
            f"<h1>ZSSR run report</h1><p>{esc(str(root))} &middot; scheduler "
            f"<code>{esc(str(summary.get('scheduler')))}</code> &middot; "
            f"{_fmt(summary.get('seconds'), '.1f', ' s')}</p>"
            f"<table><tr>{head}</tr><tr>{vals}</tr></table>"
            f"<table><tr><th>image</th><th>state</th><th>error</th></tr>{index}</table>"
            f"{body}</body></html>\n")


def write_report(root: Path, entries: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """Plot the curves, then write ``report.json`` and ``report.html``; returns the HTML."""
    root = Path(root)
    for e in entries:
        hist = e.get("history")
        if hist and hist.get("iterations"):
            rel = f"report_assets/{e['key']}_curves.png"
            try:
                plot_curves(hist, root / rel, title=str(e.get("name", "")), root=root)
            except UnsafeOutputError:
                raise
            except (ValueError, OSError) as exc:
                log.warning("%s: cannot plot the training curves: %s", e.get("name"), exc)
            else:
                e.setdefault("assets", {})["curves"] = rel
    atomic_write_text(root / "report.json", json.dumps({"summary": summary, "images": entries},
                                                       indent=1, default=str), root=root)
    out = root / "report.html"
    atomic_write_text(out, render_html(entries, summary, root), root=root)
    return out


def write_run_report(rd: Any, entries: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """``report.json`` and ``report.html`` of the run folder ``rd`` (a
    :class:`~pipeline.runs.driver.RunDir`); on object storage written in the driver's
    scratch folder (the pictures the workers uploaded fetched for it) and uploaded."""
    if not rd.remote:
        return write_report(rd.root, entries, summary)
    from io_adapters.objstore import upload_atomic
    from io_adapters.s3_objects import download

    local = rd.scratch / "report"
    local.mkdir(parents=True, exist_ok=True)  # no picture at all: every image failed
    fetched = set()
    for e in entries:
        for rel in [*(e.get("assets") or {}).values(),
                    *(g.get("asset") for g in (e.get("kernel") or {}).get("groups", []))]:
            if isinstance(rel, str) and rel.startswith("report_assets/") and "/" not in \
                    rel[len("report_assets/"):] and rel not in fetched:
                (local / "report_assets").mkdir(parents=True, exist_ok=True)
                if download(rd.url(rd.root / rel), local / rel):
                    fetched.add(rel)
    path = write_report(local, entries, summary)
    for p in sorted(local.rglob("*")):  # the report, then its new pictures (curves)
        rel = p.relative_to(local).as_posix()
        if p.is_file() and rel not in fetched:
            upload_atomic(p, rd.url(rd.root / rel))
    return rd.root / path.relative_to(local)

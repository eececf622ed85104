"""Job specs: a YAML file that says what a scheduled batch does.

Keys (all others are errors, so jobs written today keep working)::

    inputs:        [globs, folders or list files]   # relative to the job file; URLs
                                                    # (s3://bucket/prefix/, s3://b/*.tif,
                                                    # gs://, az://, https://) kept as given
    output:        sr/                              # output folder (relative to the job file)
    name:          "{stem}_x{scale}{suffix}"        # file name template inside output
    scale:         2
    preset:        sentinel2                        # optional
    set:           {train.max_iters: 800}           # optional overrides, same keys as --set
    chain:         {pre: [...], post: [...]}        # optional; each list replaces the preset's
    scheduler:     local                            # local | synchronous | tcp://host:8786
    ground_truth:  gt/                              # optional folder of references
    output_prefix: s3://bucket/prefix/              # optional: outputs also uploaded there
    stac_items:    true                             # optional: STAC Items + collection.json
    assets:        [red, green, blue]               # optional: STAC Item inputs' bands
    transfer_syntax: rle                            # optional: DICOM outputs' encoding
    through_plane: true                             # optional: thick slices made thin
    scale_z: 4                                      # through-plane: or slice_spacing (mm)

The name template knows ``{stem}`` (input name without suffix), ``{name}``
(input file name), ``{parent}`` (its folder's name), ``{scale}`` (as ``2`` or
``1.5``) and ``{suffix}`` (the output format's, e.g. ``.tif``); it may hold
sub-folders but must stay inside ``output``, and it may never name an input (or a
folder around or inside one) or the batch's own control files
(``.zssr-batch-state.json``, ``.zssr-batch.lock``, ``.zssr-batch-run``, and
``collection.json`` with ``stac_items``): such a job is refused before anything is
processed (:func:`check_targets`).  The output folder, state file and lock stay local
whatever the inputs and ``output_prefix`` are (:mod:`workflows.batch_cloud`).

``transfer_syntax`` is ``zssr run --transfer-syntax`` (``explicit-little``, the default,
``rle`` or ``jpeg2000-lossless``) for the job's DICOM outputs; other outputs ignore it.

``through_plane: true`` (or a preset with a ``through_plane`` section: ``ct-thin``,
``mr-thin``) is ``zssr run --through-plane``: every input is a volume made thin along its
slice axis, with ``scale_z`` (slices F times closer) or ``slice_spacing`` (mm), and
optionally ``slice_profile``, winning over the section's keys
(:func:`pipeline.runs.volumes.job_through_plane`); no ``scale``.  ``{scale}`` is then
``z4``, ``z2p5`` or ``1p2mm`` and the default name ``{stem}_{scale}{suffix}``, the
suffix the volume's own format (a DICOM series: a folder).

>>> spec = job_from_dict({"inputs": ["a/*.tif"], "output": "out", "scale": 2}, base=Path("/j"))
>>> spec.output, spec.name
(PosixPath('/j/out'), '{stem}_x{scale}{suffix}')
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from configs import load_yaml
from geometry import ScaleError, as_scale
from io_adapters.dicom import TRANSFER_SYNTAXES
from io_adapters.output_safety import (
    BATCH_LOCK_FILE,
    BATCH_RUN_DIR,
    BATCH_STATE_FILE,
    Claimed,
    absolute,
    conflict,
)
from pipeline.catalog.stac_input import parse_assets
from pipeline.errors import UsageError
from pipeline.runs.config import ResolvedConfig, ThroughPlaneConfig, resolve_run_config
from pipeline.runs.remote_inputs import is_url
from pipeline.runs.stac_run import COLLECTION_FILE
from pipeline.runs.upload import check_prefix
from pipeline.runs.volumes import job_through_plane, volume_tag
from zssr.errors import ConfigError
from zssr.typed import build, public_fields

__all__ = ["JobFile", "JobSpec", "JOB_KEYS", "NAME_FIELDS", "load_job", "job_from_dict", "render_name",
           "control_paths", "check_targets", "job_input"]

NAME_FIELDS = ("stem", "name", "parent", "scale", "suffix")
DEFAULT_NAME = "{stem}_x{scale}{suffix}"
THROUGH_PLANE_NAME = "{stem}_{scale}{suffix}"  # {scale}: z4, 1p2mm (as zssr run's names)


@dataclass(frozen=True)
class JobFile:
    """A job file's keys as written, with their types: read by the one typed loader
    (:func:`zssr.typed.build`), which names the key and the problem in every error."""

    inputs: tuple[str, ...]
    output: str
    scale: float | None = None  # in-plane SR; through-plane takes scale_z or slice_spacing
    name: str | None = None
    preset: str | None = None
    set: dict[str, Any] | None = None
    chain: dict[str, Any] | None = None
    scheduler: str | None = None
    ground_truth: str | None = None
    output_prefix: str | None = None
    stac_items: bool = False
    transfer_syntax: str | None = None
    through_plane: bool = False  # as zssr run --through-plane, with one of:
    scale_z: float | None = None
    slice_spacing: float | None = None
    slice_profile: float | None = None
    assets: tuple[str, ...] | None = None


JOB_KEYS = tuple(public_fields(JobFile))


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec; paths are absolute (resolved against the job file's folder)."""

    inputs: tuple[str, ...]
    output: Path
    scale: float  # 1.0 in a through-plane job
    through_plane: ThroughPlaneConfig | None = None  # None: in-plane SR
    name: str = DEFAULT_NAME
    preset: str | None = None
    set: dict[str, Any] = field(default_factory=dict)
    chain: dict[str, Any] | None = None
    scheduler: str | None = None
    ground_truth: Path | None = None
    source: Path | None = None  # the job file
    output_prefix: str | None = None  # s3://bucket/prefix/ (ends in "/")
    stac_items: bool = False
    transfer_syntax: str = "explicit-little"  # of DICOM outputs (io_adapters.dicom)
    #: STAC Item inputs: their assets or eo:bands names, stacked in order (as --assets)
    assets: tuple[str, ...] | None = None

    def overrides(self) -> list[str]:
        """``set`` as ``key=value`` strings (values as JSON, which is YAML), chain last."""
        out = [f"{k}={json.dumps(v)}" for k, v in self.set.items()]
        if self.chain is not None:
            out.append(f"chain={json.dumps(self.chain)}")
        return out

    def resolve(self) -> ResolvedConfig:
        """Engine + pipeline config: defaults <- preset <- set <- chain."""
        return resolve_run_config(preset=self.preset, overrides=self.overrides())


def _where(source: Path | None) -> str:
    return f"job {source}" if source else "job"


def _scale(value: float, where: str) -> float:
    if not 1 < value <= 64:
        raise UsageError(f"{where}: 'scale' = {value!r}; expected a number > 1 (and <= 64)")
    try:  # as the tile grid will (like `zssr run --scale`): one usage error, not N failures
        as_scale(value, name=f"{where}: 'scale'")
    except ScaleError as exc:
        raise UsageError(str(exc)) from None
    return value


def _path(value: str, key: str, base: Path, where: str) -> Path:
    if not value.strip():
        raise UsageError(f"{where}: {key!r} = {value!r}; expected a path")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def job_input(text: str, base: Path) -> str:
    """An input as written -> as run: a URL kept as given, a path made absolute
    (relative to ``base``, the job file's or list file's folder)."""
    if is_url(text):
        return text
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else base / p)


def _assets(value: tuple[str, ...] | None, where: str) -> tuple[str, ...] | None:
    """``assets``: a list of asset keys or eo:bands names, none empty."""
    if value is None:
        return None
    names = parse_assets(value)
    if not names or len(names) != len(value):
        raise UsageError(f"{where}: 'assets' = {value!r}; expected a list of asset keys or "
                         "eo:bands common names, e.g. [red, green, blue]")
    return tuple(names)


def _prefix(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    try:
        return check_prefix(value)
    except UsageError:
        raise UsageError(f"{where}: 'output_prefix' = {value!r}; expected s3://bucket/ or "
                         "s3://bucket/prefix/") from None


def _transfer_syntax(value: str | None, where: str) -> str:
    if value is None:
        return "explicit-little"
    if value not in TRANSFER_SYNTAXES:
        raise UsageError(f"{where}: 'transfer_syntax' = {value!r}; expected one of "
                         f"{', '.join(TRANSFER_SYNTAXES)}")
    return value


def _typed(data: dict, where: str) -> JobFile:
    if isinstance(data.get("inputs"), str):  # one input may be written without a list
        data = {**data, "inputs": [data["inputs"]]}
    try:
        return build(JobFile, data, where=lambda k: f"{where}: {k!r}",
                     unknown=lambda k, allowed: f"{where}: unknown key {k!r}; allowed keys: "
                                                + ", ".join(allowed))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def job_from_dict(data: Any, *, base: Path, source: Path | None = None) -> JobSpec:
    """Validate plain data into a :class:`JobSpec` (relative paths against ``base``)."""
    where = _where(source)
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping of {', '.join(JOB_KEYS)}")
    missing = [k for k in ("inputs", "output") if k not in data]
    if missing and not [k for k in data if k not in JOB_KEYS]:  # an unknown key is said first
        raise UsageError(f"{where}: missing key {missing[0]!r}")
    job = _typed(data, where)
    if not job.inputs:
        raise UsageError(f"{where}: 'inputs' is empty; expected a list of globs, folders or "
                         "list files")
    spec = JobSpec(inputs=tuple(job_input(i, base) for i in job.inputs), output=_path(job.output, "output", base, where),
                   scale=1.0 if job.scale is None else _scale(job.scale, where),
                   name=job.name or DEFAULT_NAME,
                   preset=job.preset, set=dict(job.set or {}), chain=job.chain,
                   scheduler=job.scheduler,
                   ground_truth=None if job.ground_truth is None
                   else _path(job.ground_truth, "ground_truth", base, where),
                   source=source, output_prefix=_prefix(job.output_prefix, where),
                   stac_items=job.stac_items,
                   transfer_syntax=_transfer_syntax(job.transfer_syntax, where),
                   assets=_assets(job.assets, where))
    spec = _through_plane(spec, job, where)
    check_template(spec)
    spec.resolve()  # config errors now, naming the key, not at 2 a.m.
    return spec


def _through_plane(spec: JobSpec, job: JobFile, where: str) -> JobSpec:
    """The job's through-plane settings, by ``zssr run --through-plane``'s rule; what
    through-plane does not use is refused in one line, never ignored."""
    rc = spec.resolve()
    try:
        tp = job_through_plane(rc.pipeline.through_plane, asked=job.through_plane,
                               scale_z=job.scale_z, slice_spacing=job.slice_spacing,
                               slice_profile=job.slice_profile)
    except ConfigError as exc:
        raise UsageError(f"{where}: {exc}") from None
    if tp is None:
        if job.scale is None:
            raise UsageError(f"{where}: missing key 'scale'")
        return spec
    unused = [key for key, value in (("scale", job.scale is not None),
                                     ("chain", rc.pipeline.chain.pre or rc.pipeline.chain.post),
                                     ("ground_truth", job.ground_truth),
                                     ("output_prefix", job.output_prefix),
                                     ("stac_items", job.stac_items)) if value]
    if unused:
        raise UsageError(f"{where}: {unused[0]!r} is not used by a through-plane job "
                         "(it takes 'scale_z' or 'slice_spacing'); drop it")
    return replace(spec, through_plane=tp, name=job.name or THROUGH_PLANE_NAME)


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file (YAML)."""
    path = Path(path).resolve()
    if not path.exists():  # a FIFO or /dev/zero exists: load_yaml says what it is
        raise UsageError(f"job file {path}: not found")
    return job_from_dict(load_yaml(path), base=path.parent, source=path)


def check_template(spec: JobSpec) -> None:
    """The name template uses known fields only and stays inside the output folder."""
    where = _where(spec.source)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(spec.name) if f is not None]
    except ValueError as exc:
        raise UsageError(f"{where}: name template {spec.name!r}: {exc}") from None
    bad = [f for f in fields if f not in NAME_FIELDS]
    if bad:
        raise UsageError(f"{where}: name template {spec.name!r}: unknown field {{{bad[0]}}}; "
                         f"allowed: {', '.join('{' + f + '}' for f in NAME_FIELDS)}")
    out = render_name(spec, stem="x", name="x.tif", parent="p", suffix=".tif")
    problem = conflict(out, control=control_paths(spec))
    if problem is not None:
        raise UsageError(f"{where}: name template {spec.name!r} gives {out}: {problem}; "
                         "outputs never replace the batch's own files")


def control_paths(spec: JobSpec) -> tuple[Path, ...]:
    """The batch's own files in its output folder: state, lock, run folder (and the STAC
    Collection with ``stac_items``)."""
    root = spec.output.resolve()
    stac = (root / COLLECTION_FILE,) if spec.stac_items else ()
    return (root / BATCH_STATE_FILE, root / BATCH_LOCK_FILE, root / BATCH_RUN_DIR, *stac)


def check_targets(spec: JobSpec, targets: dict[Path, Path], *,
                  inputs: list[Path] | None = None) -> None:
    """Refuse (before any processing) a name template that maps an input onto an input,
    a folder around or inside one, or a control file; ``targets`` is ``{input: output}``,
    ``inputs`` every input of the job (default: the targets' keys)."""
    claimed = Claimed(list(targets) if inputs is None else inputs, "input")
    control = Claimed(control_paths(spec), "control file of zssr")
    for src, out in targets.items():
        problem = conflict(out, inputs=claimed, control=control)
        if problem is not None:
            raise UsageError(f"{_where(spec.source)}: name template {spec.name!r} maps {src} "
                             f"to {out}: {problem}; change 'name' or 'output' so outputs "
                             "never land on inputs or on the batch's own files")


def render_name(spec: JobSpec, *, stem: str, name: str, parent: str, suffix: str) -> Path:
    """The output path for one input; an error when it escapes ``spec.output``."""
    scale = f"{spec.scale:g}" if spec.through_plane is None else volume_tag(spec.through_plane)
    text = spec.name.format(stem=stem, name=name, parent=parent, scale=scale, suffix=suffix)
    long = [p for p in Path(text).parts if len(os.fsencode(p)) > 255]  # NAME_MAX
    if "\0" in text or long:
        what = "holds a NUL character" if "\0" in text else \
            f"has a name of {len(os.fsencode(long[0]))} bytes (at most 255)"
        raise UsageError(f"{_where(spec.source)}: name template {spec.name!r} gives "
                         f"{text!r}, which {what}; shorten or fix 'name'")
    out = absolute(spec.output / text)  # the last name is kept: a link there is seen
    root = spec.output.resolve()
    if Path(text).is_absolute() or out == root or not out.is_relative_to(root):
        raise UsageError(f"{_where(spec.source)}: name template {spec.name!r} gives {text!r}, "
                         f"which is not inside the output folder {root}; use a relative name "
                         "without '..'")
    return out

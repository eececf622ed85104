"""``zssr run --through-plane`` and ``zssr batch`` jobs with ``through_plane: true`` (or a
preset with a ``through_plane`` section): each input volume (a DICOM series folder, an
enhanced multi-frame file, a NIfTI file, a Zarr) is one node of the run's graph.

The node calls :func:`pipeline.image.volume.upscale_through_plane`, the function of
``zssr upscale --through-plane``, with the output inside the run's ``outputs/``: the
LR volume read whole (the result goes to a memmap beside the output, slab by slab),
super-resolved along its slice axis and written atomically, the run's claim on the
output written just before the commit.  The driver plans each volume from
its metadata alone (:func:`pipeline.image.volume.plan_volume`: a single slice, a missing
spacing, slices that are not the thickest axis fail that volume only, before any work),
checks the output can be written, and skips a volume an earlier run finished
(:func:`pipeline.runs.state.resume_output`, the rule images follow).  A volume is not
tiled: there is no train/infer split to resume from, so an interrupted volume starts
again.  A batch job's keys become the same settings by :func:`job_through_plane`, and
its output names by :func:`volume_stem`, :func:`volume_tag` and :func:`volume_suffix`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from io_adapters.base import Metadata
from io_adapters.detect import open_reader, open_writer
from pipeline.errors import UsageError
from pipeline.image.job import dicom_writer_options
from pipeline.image.volume import VolumeJob, plan_volume, upscale_through_plane
from pipeline.runs.config import OverrideNames, ThroughPlaneConfig, through_plane_settings
from pipeline.runs.driver import RunDir
from pipeline.runs.graph import Node
from pipeline.runs.identity import image_key, input_identity
from pipeline.runs.inputs import InputItem
from pipeline.runs.rundir import RunPaths
from pipeline.runs.settings import RunSettings
from pipeline.runs.state import ImageState, resume_output
from zssr.errors import ConfigError

__all__ = ["VolumeSpec", "VolumeState", "volume_task", "plan_volume_state", "volume_output",
           "volume_stem", "volume_tag", "volume_suffix", "job_through_plane", "JOB_KEYS"]


@dataclass(frozen=True)
class VolumeSpec:
    """One volume of a run, as its task needs it (picklable; built by the driver)."""

    key: str
    name: str
    job: VolumeJob  # job.output: the final output path, inside outputs/
    run_dir: Path
    factor: float
    slices: tuple[int, int]  # (old, new)
    out_shape: tuple[int, int]  # (rows, cols), in-plane size kept
    replace_output: bool = False  # an existing output may be replaced (this key wrote it)
    torch_threads: int | None = None

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.run_dir)


def volume_task(spec: VolumeSpec) -> dict[str, Any]:
    """The Dask task: the volume through-plane into ``spec.job.output``; the report entry
    part (``write_seconds`` is the whole task's time less training and inference)."""
    import torch

    if spec.torch_threads and torch.get_num_threads() != spec.torch_threads:
        torch.set_num_threads(spec.torch_threads)
    output = Path(spec.job.output)
    job = replace(spec.job, overwrite=spec.replace_output)
    result = upscale_through_plane(job, before_commit=lambda: spec.paths.claim_output(
        spec.key, output))  # this key owns what is committed next
    h = result.history
    return {"output": str(result.output), "factor": result.factor,
            "slices": list(result.slices), "train_seconds": h.train_seconds,
            "infer_seconds": h.infer_seconds, "iterations": h.iterations,
            "write_seconds": max(0.0, result.seconds - h.train_seconds - h.infer_seconds)}


def volume_output(meta: Metadata, name: str, settings: RunSettings) -> str:
    """``<name>_z<F>`` or ``<name>_<MM>mm`` (``z2p5``, ``1p2mm``), and the suffix
    (:func:`volume_suffix`)."""
    return f"{volume_stem(name)}_{volume_tag(settings.through_plane)}" \
        f"{volume_suffix(meta, settings.out_format)}"


def volume_stem(name: str) -> str:
    """An input's name without a ``.nii`` left by ``.nii.gz``."""
    return name[:-4] if name.endswith(".nii") else name


def volume_tag(tp: ThroughPlaneConfig) -> str:
    """``z<F>`` or ``<MM>mm`` with ``p`` for the dot (``z2p5``, ``1p2mm``): a dot would make
    a suffix of a series folder."""
    tag = f"z{tp.scale_z:g}" if tp.scale_z is not None else f"{tp.slice_spacing:g}mm"
    return tag.replace(".", "p")


def volume_suffix(meta: Metadata, out_format: str | None) -> str:
    """The input's own format (a DICOM series: a folder, a new derived series; NIfTI: as
    the input; an enhanced multi-frame DICOM: ``.dcm``, one enhanced file of the thin
    slices; a legacy one: ``.nii.gz``), or ``.zarr`` with ``--format zarr``."""
    if out_format == "zarr":
        return ".zarr"
    if out_format is not None:
        raise UsageError(f"--format {out_format}: through-plane outputs are the "
                         "input's own format or zarr")
    if meta.format == "nifti":
        return ".nii.gz" if str(meta.path).endswith(".gz") else ".nii"
    if meta.format == "dicom":
        enhanced = meta.extra["datasets"][0].get("PerFrameFunctionalGroupsSequence")
        return "" if meta.extra.get("layout") == "series" else ".dcm" if enhanced \
            else ".nii.gz"
    return ".zarr"


#: a batch job's keys overriding its config's ``through_plane`` section
JOB_KEYS = OverrideNames(
    ConfigError, ("'scale_z'", "'slice_spacing'", "'slice_profile'"),
    unasked="{given} goes with 'through_plane: true' (or a preset such as ct-thin)",
    one_of="a through-plane job takes one of 'scale_z' and 'slice_spacing'{both}")


def job_through_plane(section: ThroughPlaneConfig | None, *, asked: bool,
                      scale_z: float | None, slice_spacing: float | None,
                      slice_profile: float | None) -> ThroughPlaneConfig | None:
    """A ``zssr batch`` job's through-plane settings: ``zssr run --through-plane``'s rule
    (:func:`pipeline.runs.config.through_plane_settings`) with ``through_plane: true`` as
    the flag and the job's keys as the overrides, then the values checked as the config
    section's are (``config key 'through_plane.scale_z': ...``).  ``None``: in-plane SR.
    Errors are :class:`~zssr.errors.ConfigError` naming the job key."""
    tp = through_plane_settings(section, asked=asked, scale_z=scale_z,
                                slice_spacing=slice_spacing, slice_profile=slice_profile,
                                names=JOB_KEYS)
    if tp is not None:
        tp.validate()
    return tp


class VolumeState(ImageState):
    """One volume during a run (driver side): a single ``volume`` node."""

    def nodes(self, *, gpu: bool) -> list[Node]:
        return [Node(f"zssr-volume-{self.key}-{self.run_id}", volume_task, (self.spec,),
                     self.key, "volume", gpu=gpu)]

    def pending_units(self) -> int:
        return 0

    def on_done(self, node: Node, result: Any, rd: RunDir, observer: Any) -> None:
        if self.state != "failed":
            self.seconds["train"] = float(result.get("train_seconds", 0.0))
            self.seconds["infer"] = float(result.get("infer_seconds", 0.0))
        super().on_done(node, result, rd, observer)

    def entry(self) -> dict[str, Any]:
        spec = self.spec
        e: dict[str, Any] = {"key": self.key, "name": self.name, "input": self.item.location,
                             "state": self.state}
        if spec is not None:
            rows, cols = spec.out_shape
            e.update(output=str(spec.job.output), through_plane=True, scale_z=spec.factor,
                     slices=list(spec.slices), output_mp=rows * cols * spec.slices[1] / 1e6,
                     seconds=dict(self.seconds))
        if self.error is not None:
            e.update(error_class=self.error_class, error=self.error, stage=self.stage)
        e.update(self.finalized)
        return e


def plan_volume_state(item: InputItem, name: str, settings: RunSettings, rd: RunDir,
                      last: dict[str, dict[str, Any]], owners: dict[str, str]) -> VolumeState:
    """Read the volume's metadata, plan it, decide what earlier runs did, and check the
    output can be written (nothing is computed yet)."""
    tp = settings.through_plane
    key = image_key(name, input_identity(item.path), settings.fingerprint())
    job = VolumeJob(input=item.path, output=Path(), config=settings.config,
                    scale_z=tp.scale_z, slice_spacing=tp.slice_spacing,
                    profile=tp.slice_profile, device=settings.device,
                    max_pixels=settings.max_pixels, slab=tp.slab)
    with open_reader(item.path, max_pixels=settings.max_pixels) as reader:
        meta = reader.meta
        plan = plan_volume(job, meta)  # a volume that cannot go through-plane fails here
    output = rd.check_output(rd.outputs / volume_output(meta, name, settings),
                             inputs=(item.path,))
    job = replace(job, output=output, writer_options=dicom_writer_options(
        output, False, settings.transfer_syntax))  # --transfer-syntax: DICOM outputs
    spec = VolumeSpec(key=key, name=name, job=job, run_dir=rd.root,
                      factor=plan.factor, slices=(meta.frames, plan.slices),
                      out_shape=(plan.out_meta.rows, plan.out_meta.cols),
                      torch_threads=settings.torch_threads)
    state = VolumeState(spec=spec, item=item)
    resume_output(state, rd, resume=settings.resume, overwrite=settings.overwrite, last=last,
                  owners=owners)
    if not state.skipped:  # the output's writer accepts it (then nothing is left behind)
        open_writer(output, plan.out_meta, inputs=(item.path,),
                    overwrite=state.spec.replace_output, **job.writer_options).abort()
    return state

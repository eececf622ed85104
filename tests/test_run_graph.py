"""The graph layer of ``zssr run``: scheduler choice, node layout, failure isolation, caches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import DATA, tiny_config

from io_adapters.detect import open_reader
from pipeline.errors import UsageError
from pipeline.image.job import ImageJob, TrainResult, plan_step
from pipeline.image.plan import ImageStep
from pipeline.runs.graph import Node, Ref, SchedulerInfo, execute, resolve_scheduler
from pipeline.runs.inputs import InputItem
from pipeline.runs.state import ImageState, build_nodes
from pipeline.runs.tasks import LOCAL_SINKS, ImageSpec, TrainOutcome, cached_model, emit
from zssr.sr_steps import SRStep

PNG = DATA / "io" / "plain" / "butterfly_48x64.png"


def test_resolve_scheduler(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert resolve_scheduler(None) == "local"
    assert resolve_scheduler("sync") == "synchronous"
    assert resolve_scheduler("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://h:1")
    assert resolve_scheduler(None) == "tcp://h:1"
    assert resolve_scheduler("local") == "local"
    with pytest.raises(UsageError, match="--scheduler 'threads': expected 'local'"):
        resolve_scheduler("threads")


def _add(*xs):
    return sum(xs)


def _boom(*xs):
    raise OSError("disk on fire")


def test_synchronous_execute_isolates_a_failed_image():
    nodes = [Node("a1", _add, (1, 2), "A", "train"),
             Node("a2", _add, (Ref("a1"), 10), "A", "infer"),
             Node("b1", _boom, (1,), "B", "train"),
             Node("b2", _add, (Ref("b1"),), "B", "finalize"),
             Node("c1", _add, (5,), "C", "finalize")]
    done, failed = {}, []
    execute(nodes, SchedulerInfo("synchronous"), on_done=lambda n, r: done.__setitem__(n.key, r),
            on_error=lambda n, e: failed.append((n.key, type(e).__name__, str(e))))
    assert done == {"a1": 3, "a2": 13, "c1": 5}
    assert failed == [("b1", "OSError", "disk on fire")]


def _warm(value, warm):
    return ("cold" if warm is None else f"warm from {warm}", value)


@pytest.mark.parametrize("scheduler", ["synchronous", "distributed"])
def test_warm_start_from_a_failed_image_starts_cold(scheduler):
    """A cross-image reference (warm start) never fails the image that holds it."""
    nodes = [Node("a1", _boom, (1,), "A", "train"),
             Node("b1", _warm, (2, Ref("a1")), "B", "train"),
             Node("b2", _add, (1, 1), "B", "finalize"),
             Node("c1", _warm, (3, Ref("b1")), "C", "train")]
    done, failed = {}, []

    def run(sched: SchedulerInfo) -> None:
        execute(nodes, sched, retries=0, on_done=lambda n, r: done.__setitem__(n.key, r),
                on_error=lambda n, e: failed.append((n.key, str(e))))

    if scheduler == "synchronous":
        run(SchedulerInfo("synchronous"))
    else:
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            run(SchedulerInfo("local", client=client))
    assert failed == [("a1", "disk on fire")]
    assert done == {"b1": ("cold", 2), "b2": 2, "c1": ("warm from ('cold', 2)", 3)}


@pytest.fixture
def spec(tmp_path: Path) -> ImageSpec:
    job = ImageJob(input=PNG, output=tmp_path / "out.png", scale=2.0, config=tiny_config(),
                   tile=16)
    with open_reader(PNG) as r:
        plan = plan_step(r.meta, job, 2.0)
    step = ImageStep(SRStep(0, plan.scale, plan.scale, job.config, last=True), plan)
    return ImageSpec(key="k-1", name="k", job=job, run_dir=tmp_path, steps=(step,), frames=1,
                     out_shape=plan.grid.hr_shape)


def test_nodes_skip_done_tiles_and_ask_for_gpus(spec: ImageSpec):
    state = ImageState(spec=spec, item=InputItem(PNG, str(PNG)), trained_before=[False],
                       done_before=[{(0, 0), (0, 5)}])
    n = len(spec.plans[0].grid)
    nodes = build_nodes(state, batch_size=4, gpu=True)
    kinds = [x.kind for x in nodes]
    assert kinds[0] == "train" and kinds[-1] == "finalize"
    infers = [x for x in nodes if x.kind == "infer"]
    units = [u for x in infers for u in x.args[3]]
    assert len(units) == n - 2 and (0, 0) not in units and (0, 5) not in units
    assert all(len(x.args[3]) <= 4 for x in infers) and infers[0].args[2] == Ref(nodes[0].key)
    assert all(x.gpu for x in nodes if x.kind != "finalize") and not nodes[-1].gpu
    assert state.tiles_total == n and state.tiles_skipped == 2 and state.pending[0] == len(infers)
    finalize = nodes[-1]
    assert {a.key for a in finalize.args if isinstance(a, Ref)} == {x.key for x in nodes[:-1]}


def test_model_cache_builds_once_per_weights(spec: ImageSpec):
    from zssr.model import build_model

    plan = spec.plans[0]
    outcomes = []
    for seed in range(6):
        state = build_model(3, spec.job.config.net, seed=seed).state_dict()
        outcomes.append(TrainOutcome(0, TrainResult(state, None, None), f"d{seed}", 0.0))
    first = cached_model(spec, plan, outcomes[0])
    assert cached_model(spec, plan, outcomes[0]) is first
    w = next(iter(first.state_dict().values()))
    assert torch.equal(w, next(iter(outcomes[0].result.state.values())))
    for o in outcomes[1:]:
        cached_model(spec, plan, o)
    assert cached_model(spec, plan, outcomes[0]) is not first  # evicted (4 kept)


def test_emit_reaches_the_local_sink_without_a_worker():
    got = []
    LOCAL_SINKS["t"] = got.append
    try:
        emit("t", {"iteration": 3})
        emit("unheard", {"x": 1})
    finally:
        LOCAL_SINKS.pop("t")
    assert got == [{"iteration": 3}]

"""The Dask side of ``zssr run``: the task graph, the scheduler, and running it.

The driver describes the work as :class:`Node` s (a function, its arguments,
references to other nodes) and :func:`execute` hands them to Dask:

* ``"local"`` (default): a :class:`distributed.LocalCluster` sized to the
  machine, worker processes x 1 thread, torch threads per worker set by a
  :class:`TorchThreads` worker plugin (the nanny sets ``OMP_NUM_THREADS=1``);
* ``"tcp://host:port"`` (or ``DASK_SCHEDULER_ADDRESS``): an existing cluster
  (``dask scheduler`` + ``dask worker``, dask-jobqueue, dask-kubernetes); the
  run directory and the inputs must be on a file system the workers share;
* ``"synchronous"``: :func:`dask.compute` with the synchronous scheduler, in
  this process, one image at a time (tests, debugging).

Distributed nodes go through :meth:`distributed.Client.submit` with
``retries`` and, for ``--device cuda``, ``resources={"GPU": 1}`` on the train
and infer tasks.  Start one GPU worker per GPU::

    dask scheduler --port 8786
    CUDA_VISIBLE_DEVICES=0 dask worker tcp://HOST:8786 --nthreads 1 --resources GPU=1
    CUDA_VISIBLE_DEVICES=1 dask worker tcp://HOST:8786 --nthreads 1 --resources GPU=1

A failed node fails its image only: the other images' nodes go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.errors import UsageError

__all__ = ["Node", "Ref", "SchedulerInfo", "open_scheduler", "execute", "resolve_scheduler",
           "default_workers"]

log = logging.getLogger(__name__)

NodeKind = Literal["kernel", "train", "infer", "finalize", "volume"]
#: The address schemes of distributed's comm registry (``distributed.comm.registry``):
#: any other is refused at once instead of failing inside ``Client`` (a 40 s close hang).
DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")


@dataclass(frozen=True)
class Ref:
    """A reference to another node's result inside a node's arguments."""

    key: str


@dataclass(frozen=True)
class Node:
    """One task: ``func(*args)`` with :class:`Ref` s replaced by results (top level only)."""

    key: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    image: str  # image key
    kind: NodeKind
    step: int = 0
    tiles: int = 0  # infer: tiles in the batch
    group: int | None = None  # train: the band group (config kernel_groups)
    gpu: bool = False  # request resources={"GPU": 1}


@dataclass
class SchedulerInfo:
    """What :func:`open_scheduler` opened."""

    address: str  # "synchronous", "local" or the scheduler address
    client: Any = None  # distributed.Client, None for synchronous
    cluster: Any = None  # the LocalCluster we started, if any
    workers: int = 1
    threads: int = 1  # task slots over all workers
    dashboard: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_scheduler(value: str | None) -> str:
    """``--scheduler`` -> ``"synchronous"``, ``"local"`` or an address (env fallback)."""
    value = value or os.environ.get("DASK_SCHEDULER_ADDRESS") or "local"
    if value in ("synchronous", "sync", "single-threaded"):
        return "synchronous"
    if value == "local":
        return value
    scheme, sep, where = value.partition("://")
    if sep and scheme in DASK_SCHEMES and where.strip("/"):
        return value
    raise UsageError(f"--scheduler {value!r}: expected 'local', 'synchronous' or a scheduler "
                     f"address {'|'.join(DASK_SCHEMES)}://host:port such as tcp://host:8786")


def default_workers() -> int:
    """Worker processes of the default local cluster: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


@contextmanager
def open_scheduler(address: str, *, workers: int | None = None, torch_threads: int | None = None,
                   gpu: bool = False, quiet: bool = False) -> Iterator[SchedulerInfo]:
    """Start or connect to the scheduler named by ``address`` (see the module doc)."""
    if address == "synchronous":
        yield SchedulerInfo("synchronous")
        return
    from distributed import Client, LocalCluster

    from pipeline.runs.dask_plugins import TorchThreads

    # distributed configures its loggers on import: its INFO lines (scheduler and nanny
    # start/stop) drown the progress bars, so they show only at debug level (-vv)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)

    cluster = None
    if address == "local":
        n = workers or default_workers()
        if torch_threads is None:
            torch_threads = max(1, (os.cpu_count() or 1) // n)
        kwargs: dict[str, Any] = {"n_workers": n, "threads_per_worker": 1, "processes": True,
                                  "dashboard_address": ":0"}
        if gpu:
            kwargs["resources"] = {"GPU": 1}
        # distributed's own INFO lines (nanny, scheduler start/stop) drown the progress bars
        kwargs["silence_logs"] = logging.ERROR if quiet else logging.WARNING
        cluster = LocalCluster(**kwargs)
        client = Client(cluster, set_as_default=False)
    else:
        try:
            client = Client(address, timeout="20s", set_as_default=False)
        except OSError as exc:
            raise UsageError(f"--scheduler {address}: cannot connect ({exc}); start the "
                             "cluster first (dask scheduler / dask worker) or use "
                             "--scheduler local") from exc
    try:
        client.register_plugin(TorchThreads(torch_threads, gpu=gpu))
        info = client.scheduler_info()
        ws = info.get("workers", {})
        threads = sum(w.get("nthreads", 1) for w in ws.values()) or 1
        dashboard = client.dashboard_link if _has_dashboard(cluster) else None
        if dashboard is None:
            log.info("no Dask dashboard: install bokeh to get one")
        yield SchedulerInfo(address, client, cluster, workers=len(ws) or 1, threads=threads,
                            dashboard=dashboard)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _has_dashboard(cluster: Any) -> bool:
    if cluster is None:
        return True  # a remote scheduler serves its own dashboard
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


OnDone = Callable[[Node, Any], None]
OnError = Callable[[Node, BaseException], None]


def execute(nodes: Sequence[Node], sched: SchedulerInfo, *, on_done: OnDone, on_error: OnError,
            retries: int = 2) -> None:
    """Run ``nodes`` (in dependency order) on ``sched``; report each result or failure."""
    if not nodes:
        return
    if sched.client is None:
        _execute_synchronous(nodes, on_done=on_done, on_error=on_error)
    else:
        _execute_distributed(nodes, sched.client, on_done=on_done, on_error=on_error,
                             retries=retries)


def _execute_distributed(nodes: Sequence[Node], client: Any, *, on_done: OnDone,
                         on_error: OnError, retries: int) -> None:
    """Submit every image's nodes; report results as they complete.

    A reference to *another* image's node (warm start) is not a Dask dependency, whose
    failure would fail this image too: the image's nodes are submitted once that node
    has finished, with its result, or ``None`` (a cold start) if it failed.
    """
    from distributed import as_completed

    image_of = {n.key: n.image for n in nodes}
    groups: dict[str, list[Node]] = {}
    for node in nodes:
        groups.setdefault(node.image, []).append(node)
    # the client is current only here: dask's global default is left untouched
    with client.as_current():
        futures: dict[str, Any] = {}
        by_future: dict[Any, Node] = {}
        pending = as_completed()

        def cross_refs(group: list[Node]) -> set[str]:
            return {a.key for n in group for a in n.args
                    if isinstance(a, Ref) and image_of.get(a.key) != n.image}

        def ready(keys: set[str]) -> bool:
            return all(k not in image_of or (k in futures and futures[k].done()) for k in keys)

        def submit(group: list[Node], keys: set[str]) -> None:
            outside = {k: futures[k] if k in futures and futures[k].status == "finished"
                       else None for k in keys}
            for node in group:
                args = [(outside[a.key] if a.key in outside else futures[a.key])
                        if isinstance(a, Ref) else a for a in node.args]
                fut = client.submit(node.func, *args, key=node.key, pure=False,
                                    retries=retries,
                                    resources={"GPU": 1} if node.gpu else None)
                futures[node.key] = fut
                by_future[fut] = node
                pending.add(fut)

        waiting = [(g, cross_refs(g)) for g in groups.values()]

        def submit_ready() -> None:
            still = []
            for group, keys in waiting:
                if ready(keys):
                    submit(group, keys)
                else:
                    still.append((group, keys))
            waiting[:] = still

        submit_ready()
        for fut in pending:
            node = by_future[fut]
            if fut.status == "finished":
                on_done(node, fut.result())
            else:
                try:
                    exc = fut.exception()
                except Exception as err:  # noqa: BLE001 - cancelled futures raise here
                    exc = err
                on_error(node, exc if isinstance(exc, BaseException) else RuntimeError(str(exc)))
            submit_ready()
        for group, _ in waiting:  # unreachable unless a reference never completes
            on_error(group[0], RuntimeError("a warm-start reference never completed"))


def _execute_synchronous(nodes: Sequence[Node], *, on_done: OnDone, on_error: OnError) -> None:
    import dask
    from dask.callbacks import Callback

    by_key = {n.key: n for n in nodes}
    done: set[str] = set()
    results: dict[str, Any] = {}  # cross-image refs (warm start) read earlier images' results

    class _Report(Callback):
        def _posttask(self, key, result, dsk, state, id):  # noqa: A002 - dask's signature
            node = by_key.get(key)
            if node is not None:
                done.add(key)
                if node.kind == "train":
                    results[key] = result
                on_done(node, result)

    def arg(a: Any, delayed: dict[str, Any]) -> Any:
        if not isinstance(a, Ref):
            return a
        if a.key in delayed:
            return delayed[a.key]
        return results.get(a.key)  # another image's node; None if it failed (cold start)

    images: dict[str, list[Node]] = {}
    for node in nodes:
        images.setdefault(node.image, []).append(node)
    for image_nodes in images.values():
        delayed: dict[str, Any] = {}
        for node in image_nodes:
            args = [arg(a, delayed) for a in node.args]
            delayed[node.key] = dask.delayed(node.func, pure=False, traverse=False)(
                *args, dask_key_name=node.key)
        try:
            with _Report():
                dask.compute(*delayed.values(), scheduler="synchronous", optimize_graph=False)
        except Exception as exc:  # noqa: BLE001 - one image's failure must not stop the batch
            failed = next((n for n in image_nodes if n.key not in done), image_nodes[-1])
            on_error(failed, exc)

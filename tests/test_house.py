"""The house's shape, read from the code's own imports (issue 15).

* arrows between packages run one way (``LAYERS``): the engine and the adapters never
  import the pipeline, each other or the workflows; the pipeline never imports the
  workflows (``zssr batch`` comes in through the ``zssr.commands`` entry point);
* no import circle between modules, counting imports placed inside functions (an import
  moved into a function to dodge a circle is still an arrow);
* no module over ``MAX_LINES`` lines, except those listed with their reason and a size
  they may not grow past.

Each check is shown to fail on a planted graph (the ``test_checker_*`` tests), so an
empty result means the house is sound, not that the walker saw nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geometry", "zssr", "io_adapters", "configs", "pipeline", "workflows")

#: package -> first-party packages it may import
LAYERS = {
    "geometry": set(),
    "zssr": {"geometry"},
    "io_adapters": {"geometry"},
    "configs": {"zssr", "geometry"},
    "pipeline": {"geometry", "zssr", "io_adapters", "configs"},
    "workflows": {"geometry", "zssr", "io_adapters", "configs", "pipeline"},
}

#: floors of ``pipeline/`` -> the floors each may import (arrows run down only).  The
#: foundation modules (``pipeline.errors``, ``pipeline.source``, ``pipeline.locking``)
#: are the floor "" that every floor may use and that imports no floor.
PIPELINE_FLOORS = {
    "": set(),
    "steps": {""},
    "image": {"", "steps"},
    "catalog": {"", "image"},
    "runs": {"", "steps", "image", "catalog"},
    "cli": {"", "steps", "image", "catalog", "runs"},
}

MAX_LINES = 400
#: module -> (lines it may not exceed, why it is still over MAX_LINES)
KNOWN_OVER: dict[str, tuple[int, str]] = {}  # none left: every module is under the limit


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every first-party module."""
    out = {}
    for pkg in PACKAGES:
        base = ROOT / pkg
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> first-party modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_pkg, node)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:  # a.b.c -> the module that defines it
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        top = src.split(".")[0]
        for dst in targets:
            other = dst.split(".")[0]
            if other != top and other not in LAYERS[top]:
                bad.append(f"{src} -> {dst}")
    return sorted(bad)


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in PIPELINE_FLOORS) else ""


def wrong_floor(graph: dict[str, set[str]]) -> list[str]:
    """Arrows inside ``pipeline/`` that go up or sideways between its sub-packages."""
    bad = []
    for src, targets in graph.items():
        if src.split(".")[0] != "pipeline":
            continue
        mine = _floor(src)
        if mine not in PIPELINE_FLOORS:
            bad.append(f"{src} (a sub-package with no floor in PIPELINE_FLOORS)")
            continue
        for dst in targets:
            if dst.split(".")[0] == "pipeline" and _floor(dst) != mine \
                    and _floor(dst) not in PIPELINE_FLOORS[mine]:
                bad.append(f"{src} -> {dst}")
    return sorted(bad)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files())


def test_the_walker_sees_the_house(graph):
    assert len(graph) > 70
    assert "pipeline.image.job" in graph["pipeline.image.upscale"]
    assert "zssr.train" in graph["pipeline.image.job"]
    assert "pipeline.steps.base" in graph["pipeline.steps.registry"]


def test_arrows_run_one_way(graph):
    assert wrong_way(graph) == []


def test_pipeline_floors_run_one_way(graph):
    assert wrong_floor(graph) == []
    floors = {_floor(m) for m in graph if m.startswith("pipeline.")}
    assert floors == set(PIPELINE_FLOORS), floors  # every sub-package has its floor


def test_floor_checker_catches_an_upward_arrow():
    planted = {"pipeline.image.job": {"pipeline.runs.rundir", "pipeline.errors"},
               "pipeline.runs.rundir": {"pipeline.source"}, "pipeline.source": set(),
               "pipeline.errors": {"pipeline.cli.main"}, "pipeline.cli.main": set(),
               "pipeline.extra.x": set()}
    assert wrong_floor(planted) == ["pipeline.errors -> pipeline.cli.main",
                                    "pipeline.extra.x (a sub-package with no floor in "
                                    "PIPELINE_FLOORS)",
                                    "pipeline.image.job -> pipeline.runs.rundir"]


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_no_module_over_the_size_limit():
    over = {}
    for path in module_files().values():
        rel = str(path.relative_to(ROOT))
        n = len(path.read_text().splitlines())
        limit = KNOWN_OVER.get(rel, (MAX_LINES, ""))[0]
        if n > limit:
            over[rel] = n
    assert over == {}, f"modules over {MAX_LINES} lines (split them by concern): {over}"


def test_checker_catches_a_circle_and_a_wrong_arrow():
    planted = {"pipeline.a": {"pipeline.b"}, "pipeline.b": {"pipeline.c"},
               "pipeline.c": {"pipeline.a"}, "zssr.x": {"pipeline.a"},
               "pipeline.cli.main": {"workflows.batch"}, "workflows.batch": set()}
    assert circles(planted) == [["pipeline.a", "pipeline.b", "pipeline.c"]]
    assert wrong_way(planted) == ["pipeline.cli.main -> workflows.batch", "zssr.x -> pipeline.a"]


def test_checker_counts_imports_inside_functions(tmp_path, monkeypatch):
    pkg = tmp_path / "pipeline"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    g = import_graph(module_files())
    assert circles(g) == [["pipeline.a", "pipeline.b"]]


def test_every_error_class_carries_its_exit_code_kind():
    """Exit codes are carried by the error classes (``kind``), not by a list in the CLI:
    every exception class defined in the packages names a class of the exit-code table,
    and the engine's errors share one base."""
    import importlib
    import inspect

    from pipeline.errors import EXIT, exit_code
    from zssr.errors import ZSSRError

    missing, engine_outside_base = [], []
    for module in module_files():
        if module.endswith("__main__"):
            continue
        mod = importlib.import_module(module)
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != module or not issubclass(cls, Exception):
                continue
            kind = getattr(cls, "kind", None)
            base = f"{module}.{name}" in ("zssr.errors.ZSSRError", "pipeline.errors.PipelineError",
                                          "io_adapters.errors.IOAdapterError")
            if kind not in EXIT or (kind == "internal" and not base):
                missing.append(f"{module}.{name}")
            if module.startswith("zssr.") and not issubclass(cls, ZSSRError):
                engine_outside_base.append(f"{module}.{name}")
    assert missing == [] and engine_outside_base == []
    from zssr.kernels import KernelError

    assert exit_code(KernelError("k")) == EXIT["kernel"]
    assert exit_code(OSError(28, "No space left on device")) == EXIT["write"]

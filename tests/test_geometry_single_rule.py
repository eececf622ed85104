"""One output-size rule and one scale normaliser, kept so (issue 15).

``geometry`` owns them: :func:`geometry.as_scale` builds every scale, and
:func:`geometry.output_size` (``ceil(n * s)``, exact) with its inverse
:func:`geometry.downscaled_size` computes every size.  Before, six functions answered
"how many pixels" and disagreed: ``zssr.resize.upscale_shape((50, 50), 1.1)`` gave 56
where the tile grid gave 55, and at 21 x 9/7 ``imresize`` gave 28 where
``inference.output_shape`` gave 27.

The source-level checks walk every module of ``zssr``, ``io_adapters``, ``pipeline`` and
``workflows`` with :mod:`ast`, following which local names carry a scale (a parameter or
attribute named ``*scale*`` and anything assigned from one), and fail on

* a ceiling of a product or quotient that involves a scale: ``math.ceil(n * s)``,
  ``np.ceil(x / scale)``, ``-(-n * s.numerator // s.denominator)``;
* another scale normaliser: a function named like a removed one, a function named
  ``*scale*`` that returns a tuple of ``float(...)`` / ``Fraction(...)``, or a float read
  as a ratio (``limit_denominator``) outside ``geometry``;
* an import of a project package inside ``geometry`` (it is the leaf everyone imports).
"""

from __future__ import annotations

import ast
import math
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from geometry import (
    Region,
    Scale,
    ScaleError,
    TileGrid,
    as_scale,
    downscaled_shape,
    downscaled_size,
    output_shape,
    output_size,
)

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("zssr", "io_adapters", "pipeline", "workflows")
PROJECT = ("zssr", "io_adapters", "pipeline", "configs", "workflows")
CEILS = {"ceil"}  # math.ceil, np.ceil, numpy.ceil, torch.ceil, ceil
SCALE_PARAMS = {"s", "sy", "sx", "sh", "sw"}  # parameters that are scales by this house's names
#: the duplicates issue 15 removed; a function of that name anywhere else is one again
REMOVED = {"as_fraction", "coerce_scale", "scaled_size", "normalize_scale", "upscale_shape",
           "downscale_shape", "output_shape", "output_size", "exact_scale", "parse_scale",
           "as_scale", "_as_scale", "scale_pair", "as_ratio"}


def _sources(packages=SCANNED) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _id(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _target_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _own_nodes(scope: ast.AST):
    """The nodes of ``scope`` outside the functions nested in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, _SCOPES):
            todo.extend(ast.iter_child_nodes(node))


class _Scope:
    """Names that carry a scale inside one function (or module), to a fixed point: the
    enclosing scope's, parameters named ``*scale*`` (or ``s``, ``sy``, ``sx``, ...), and
    what is assigned from them."""

    def __init__(self, node: ast.AST, outer: frozenset[str] = frozenset()) -> None:
        self.node = node
        self.names: set[str] = set(outer)
        if isinstance(node, _SCOPES):
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and ("scale" in a.arg.lower() or a.arg in SCALE_PARAMS):
                    self.names.add(a.arg)
        flows = []
        for n in _own_nodes(node):
            if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                if n.value is not None:
                    flows.append((n.value, set().union(*map(_target_names, targets))))
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
                flows.append((n.iter, _target_names(n.target)))
        changed = True
        while changed:
            changed = False
            for value, targets in flows:
                if not targets <= self.names and self.mentions(value):
                    self.names |= targets
                    changed = True

    def mentions(self, expr: ast.AST) -> bool:
        for n in ast.walk(expr):
            if isinstance(n, ast.Constant) and n.value == "scale":  # meta.extra["scale"]
                return True
            name = _id(n)
            if name is None:
                continue
            if "scale" in name.lower() or name in ("numerator", "denominator"):
                return True
            if isinstance(n, ast.Name) and name in self.names:
                return True
        return False

    def children(self) -> list[_Scope]:
        return [_Scope(n, frozenset(self.names)) for n in _own_nodes(self.node)
                if isinstance(n, _SCOPES)]


def _is_ceil(call: ast.AST) -> bool:
    return isinstance(call, ast.Call) and _id(call.func) in CEILS


def _has_product(expr: ast.AST) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Div, ast.FloorDiv))
               for n in ast.walk(expr))


def _neg_floor_div(node: ast.AST) -> bool:
    """``-(-a // b)`` (or ``-(-a * c // b)``): the integer ceiling idiom."""
    return (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.BinOp) and isinstance(node.operand.op, ast.FloorDiv)
            and any(isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)
                    for n in ast.walk(node.operand.left)))


def size_rule_violations(tree: ast.AST, where: str) -> list[str]:
    """Ceilings of products/quotients involving a scale, scope by scope."""
    out = []
    todo = [_Scope(tree)]
    while todo:
        scope = todo.pop()
        todo += scope.children()
        for n in _own_nodes(scope.node):
            if (_is_ceil(n) and n.args and _has_product(n.args[0])
                    and scope.mentions(n.args[0])) or (_neg_floor_div(n) and scope.mentions(n)):
                out.append(f"{where}:{n.lineno}: {ast.unparse(n)}")
    return sorted(set(out))


def _returns_number_tuple(func: ast.FunctionDef) -> bool:
    for n in ast.walk(func):
        if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple) and n.value.elts and all(
                isinstance(e, ast.Call) and _id(e.func) in ("float", "Fraction")
                for e in n.value.elts):
            return True
    return False


def normaliser_violations(tree: ast.AST, where: str) -> list[str]:
    """Another scale normaliser: a removed name, a ``*scale*`` function returning a tuple
    of float()/Fraction() calls, or a float read as a ratio."""
    out = []
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if n.name in REMOVED:
                out.append(f"{where}:{n.lineno}: def {n.name} (geometry has the one rule)")
            elif "scale" in n.name.lower() and _returns_number_tuple(n):
                out.append(f"{where}:{n.lineno}: def {n.name} returns a tuple of numbers "
                           "(normalise with geometry.as_scale)")
        elif isinstance(n, ast.Attribute) and n.attr == "limit_denominator":
            out.append(f"{where}:{n.lineno}: limit_denominator (floats become ratios in "
                       "geometry.as_scale only)")
    return out


def _violations(check) -> list[str]:
    out = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        out += check(tree, str(path.relative_to(ROOT)))
    return out


# ----------------------------------------------------------------------------- the source


def test_no_other_output_size_rule():
    assert _violations(size_rule_violations) == []


def test_no_other_scale_normaliser():
    assert _violations(normaliser_violations) == []


def test_geometry_is_a_leaf():
    bad = []
    for path in _sources(("geometry",)):
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = ([a.name for a in n.names] if isinstance(n, ast.Import)
                    else [n.module or ""] if isinstance(n, ast.ImportFrom) and not n.level
                    else [])
            bad += [f"{path.name}: import {m}" for m in mods if m.split(".")[0] in PROJECT]
    assert bad == []


# The checks themselves: each re-introduced duplicate below must be caught.
CAUGHT = {
    "float ceil": "def f(n, scale):\n    return math.ceil(n * scale)\n",
    "ceil with a nudge": "def f(rows, s):\n    sy, sx = as_scale(s)\n"
                         "    return math.ceil(rows * sy - 1e-9)\n",
    "numpy ceil": "def f(meta, job):\n    return int(np.ceil(meta.rows * job.scale))\n",
    "exact idiom": "def f(n, s):\n    return -(-n * s.numerator // s.denominator)\n",
    "through a loop": "def f(meta, r):\n    sy, sx = meta.extra.get('scale', (1.0, 1.0))\n"
                      "    for lo, s in ((r, sx), (r, sy)):\n"
                      "        x = math.ceil((lo + 1) * s)\n",
    "in a closure": "def f(scale):\n    def g(n):\n        return math.ceil(n * scale)\n",
    "quotient": "def f(n, plan):\n    return math.ceil(n / plan.scale)\n",
    "scale parameters": "def f(ds, sy, sx):\n    return math.ceil((ds.value + 1) * sx) - 1\n",
}
CLEAN = {
    "ceil of the scale itself": "def f(scale):\n    return math.ceil(scale)\n",
    "tile count": "def f(meta, tile):\n    return math.ceil(meta.rows / tile)\n",
    "kernel size": "def f(sigma):\n    sy, sx = sigma\n    return 2 * math.ceil(3 * max(sy, sx))\n",
    "blocks": "def f(n, most):\n    return -(-n // -(-n // max(most, 16)))\n",
    "the one rule": "def f(n, scale):\n    return output_size(n, as_scale(scale).rows)\n",
}


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_the_size_check_catches(name):
    assert size_rule_violations(ast.parse(CAUGHT[name]), "x.py")


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_the_size_check_passes(name):
    assert size_rule_violations(ast.parse(CLEAN[name]), "x.py") == []


@pytest.mark.parametrize("source", [
    "def as_fraction(x):\n    return x\n",
    "def normalize_scale(scale):\n    return float(scale), float(scale)\n",
    "def user_scale(v):\n    return (Fraction(v), Fraction(v))\n",
    "def f(v):\n    return Fraction(v).limit_denominator(1000)\n",
])
def test_the_normaliser_check_catches(source):
    assert normaliser_violations(ast.parse(textwrap.dedent(source)), "x.py")


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(("n", "scale", "expected"), [
    (50, 1.1, 55),          # float: 50 * 1.1 = 55.000000000000007 -> 56 (resize.upscale_shape)
    (21, "9/7", 27),        # float: 21 * (9/7) = 27.000000000000004 -> 28 (imresize)
    (10, 1.1, 11),
    (5, 1.5, 8),
    (7, 4 / 3, 10),
    (100, 2, 200),
])
def test_every_path_gives_the_exact_size(n, scale, expected):
    """The sizes where the float rule disagreed, through every path that sizes an output."""
    from io_adapters.base import Metadata
    from io_adapters.detect import scale_metadata
    from zssr.resize import fix_scale_and_size, imresize

    s = as_scale(scale)
    assert output_size(n, s.rows) == expected == math.ceil(n * Fraction(s.rows))
    assert output_shape((n, n), s) == (expected, expected)
    assert TileGrid(shape=(n, n), tile=n * s.rows.denominator, scale=s).hr_shape == (
        expected, expected)
    assert fix_scale_and_size((n, n), scale=s.floats, output_shape=None)[1] == (
        expected, expected)
    assert imresize(torch.zeros(1, n, 3), scale=(s.floats[0], 1.0)).shape[-2] == expected
    meta = Metadata(path=Path("in.png"), format="plain", bands=1, rows=n, cols=n,
                    dtype=np.dtype(np.uint8))
    assert scale_metadata(meta, s.floats[0]).shape[-2:] == (expected, expected)


def test_the_float_rule_really_disagreed_there():
    """Why the cases above matter: the old float formulas gave one pixel more."""
    assert math.ceil(50 * 1.1) == 56 and math.ceil(21 * (9 / 7)) == 28


def test_predict_output_is_the_rule():
    from zssr.config import InferConfig, NetConfig
    from zssr.inference import predict
    from zssr.model import build_model

    model = build_model(1, NetConfig(depth=2, width=2), seed=0)
    lr = torch.rand(1, 50, 21)
    infer = InferConfig(ensemble=False, back_projection_iters=1)
    assert predict(model, lr, scale=1.1, infer=infer).shape[-2:] == (55, 24)
    assert predict(model, lr[:, :21, :7], scale="9/7", infer=infer).shape[-2:] == (27, 9)


def test_downscaled_size_is_the_exact_inverse_ceiling():
    for s in (Fraction(2), Fraction(3, 2), Fraction(11, 10), Fraction(9, 7)):
        for n in range(1, 60):
            assert downscaled_size(n, s) == math.ceil(n / s)
            assert output_size(downscaled_size(n, s), s) >= n
            assert downscaled_size(n * s.numerator, s) == n * s.denominator
    assert downscaled_shape((27, 9), as_scale("9/7")) == (21, 7)


def test_as_scale_takes_every_spelling():
    expected = Scale(Fraction(3, 2), Fraction(3, 2))
    for value in (1.5, "1.5", "3/2", Fraction(3, 2), (1.5, "3/2"), [Fraction(3, 2), 1.5],
                  np.float32(1.5), expected):
        assert as_scale(value) == expected
    assert as_scale(np.int64(2)) == Scale(2, 2) and as_scale((2, 3)).floats == (2.0, 3.0)
    assert as_scale((1, 2)).isotropic is False and str(as_scale((1, 2))) == "(1, 2)"
    assert float(as_scale(1.1).rows) == 1.1  # the engine's weights see the typed value


@pytest.mark.parametrize(("value", "error", "message"), [
    (0.5, ScaleError, "scale must be >= 1 (a super-resolution factor), got 0.5"),
    ("abc", ScaleError, "scale 'abc' is not a number or a ratio such as 3/2"),
    ("1/0", ScaleError, "scale '1/0' is not a number or a ratio such as 3/2"),
    ("1.0000001", ScaleError, "scale 10000001/10000000 has a denominator above 1000"),
    ((2, 3, 4), ScaleError, "scale must be a number or a pair (rows, cols), got (2, 3, 4)"),
    ((2, 0.5), ScaleError, "col scale must be >= 1 (a super-resolution factor), got 0.5"),
    (None, TypeError, "scale must be a number, got None (NoneType)"),
    (True, TypeError, "scale must be a number, got True (bool)"),
])
def test_as_scale_errors_are_one_line(value, error, message):
    with pytest.raises(error, match=f"^{__import__('re').escape(message)}"):
        as_scale(value)


def test_size_functions_refuse_floats():
    with pytest.raises(TypeError, match="an output size needs an exact scale component"):
        output_size(50, 1.1)
    with pytest.raises(TypeError, match="output_shape needs a Scale"):
        output_shape((50, 50), 1.1)
    with pytest.raises(TypeError, match="downscaled_shape needs a Scale"):
        downscaled_shape((50, 50), (2, 2))
    with pytest.raises(ValueError, match="a scale component must be > 0, got 0"):
        downscaled_size(5, 0)


def test_scale_is_a_frozen_picklable_value():
    import pickle

    s = as_scale((2, 1.5))
    assert pickle.loads(pickle.dumps(s)) == s and hash(s) == hash(Scale(2, Fraction(3, 2)))
    with pytest.raises(AttributeError):
        s.rows = Fraction(3)  # type: ignore[misc]
    assert as_scale(2) / as_scale(1.5) == Scale(Fraction(4, 3), Fraction(4, 3))
    assert Region(0, 0, 2, 3).shape == (2, 3)

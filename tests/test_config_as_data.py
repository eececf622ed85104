"""Config and job files are data: no imports they choose, no bombs, one loader.

* A chain step ``package.module:function`` in a config or job file is refused
  unless the invocation opts in (``--allow-user-steps``, ZSSR_ALLOW_USER_STEPS=1);
  the module is never imported before that decision (a sentinel module that
  writes a file when imported proves it).  A key in the file cannot opt in.
* A 1 KB "billion laughs" file, ``/dev/zero``, a FIFO, a 1 MiB+ file and a
  latin-1 file are each refused in seconds with one line naming the file.
* ``.inf``/``.nan`` in a file or a ``--set`` value are refused naming the key;
  engine sizes are bounded with the bound in the message.
* Every YAML parse in the packages goes through ``zssr.yamldata`` (source scan).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import load_yaml
from pipeline.cli.main import main
from pipeline.errors import UsageError
from workflows.jobspec import load_job
from zssr.config import ConfigError, config_from_dict, parse_override

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "train.max_iters=2", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=0", "--set", "train.crop_size=16", "-q"]
BILLION_LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.fixture
def trap(tmp_path, monkeypatch) -> Path:
    """A module ``trapmod`` whose import writes ``imported``; returns that path."""
    monkeypatch.delenv("ZSSR_ALLOW_USER_STEPS", raising=False)
    marker = tmp_path / "imported"
    (tmp_path / "trapmod.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")

        def step(array, masks, meta):
            return array
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "trapmod", raising=False)
    return marker


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), np.uint8)).save(path)
    return path


def test_job_file_cannot_import_a_module(tmp_path, trap):
    job = tmp_path / "job.yaml"
    job.write_text("inputs: [x/*.tif]\noutput: out\nscale: 2\n"
                   "chain: {pre: ['trapmod:step', 'numpy:save']}\n")
    with pytest.raises(ConfigError, match=r"'trapmod:step'.*--allow-user-steps.*"
                       r"ZSSR_ALLOW_USER_STEPS=1"):
        load_job(job)
    assert not trap.exists()  # refused before the import: its code never ran


def test_config_file_cannot_opt_itself_in(tmp_path, trap):
    src, out = _image(tmp_path), tmp_path / "sr.png"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chain: {pre: ['trapmod:step']}\n")
    assert main(["upscale", str(src), str(out), "--scale", "2", "--config", str(cfg),
                 *TINY]) == 2
    cfg.write_text("allow_user_steps: true\nchain: {pre: ['trapmod:step']}\n")
    assert main(["upscale", str(src), str(out), "--scale", "2", "--config", str(cfg),
                 *TINY]) == 2
    assert not trap.exists() and not out.exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_the_invocation_opts_in(tmp_path, trap, monkeypatch, how):
    src, out = _image(tmp_path), tmp_path / "sr.png"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chain: {pre: ['trapmod:step']}\n")
    extra = ["--allow-user-steps"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("ZSSR_ALLOW_USER_STEPS", "1")
    assert main(["upscale", str(src), str(out), "--scale", "2", "--config", str(cfg),
                 *extra, *TINY]) == 0
    assert trap.exists() and out.exists()


def test_entry_point_steps_need_no_opt_in(tmp_path, trap):
    from pipeline.steps import step_from_config

    dist = tmp_path / "trapmod-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: trapmod\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zssr.steps]\ntrapstep = trapmod:step\n")
    assert step_from_config("trapstep").name == "trapstep"  # installed: the user's act


def _timed(fn, *args):
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        fn(*args)
    assert time.monotonic() - start < 5
    assert "\n" not in str(info.value)
    return str(info.value)


def test_billion_laughs_refused(tmp_path):
    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1100
    msg = _timed(load_yaml, path)
    assert str(path) in msg and "aliases" in msg
    flow = "[&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], " + ", ".join(
        f"&{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "]"
    assert "aliases" in _timed(parse_override, "net.depth=" + flow)  # --set: same loader


def _load_in_child(path: Path) -> subprocess.CompletedProcess:
    """``load_yaml(path)`` in a child process: a hang or a memory blow-up can't take pytest."""
    code = ("import sys\nfrom configs import load_yaml\nfrom zssr.config import ConfigError\n"
            "try:\n    load_yaml(sys.argv[1])\nexcept ConfigError as e:\n"
            "    print(e); sys.exit(2)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, text=True,
                          capture_output=True, timeout=120,  # a hang fails, not a slow start
                          preexec_fn=lambda: __import__("resource").setrlimit(
                              __import__("resource").RLIMIT_AS, (2 << 30, 2 << 30)))


def test_dev_zero_and_fifo_refused_quickly(tmp_path):
    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        done = _load_in_child(path)  # reading either would block or never end
        assert done.returncode == 2, done.stderr[-500:]
        assert f"{path}: not a regular file" in done.stdout


def test_big_and_undecodable_files_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\na: 1\n")
    assert "at most 1048576 bytes" in _timed(load_yaml, big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    msg = _timed(load_yaml, latin)
    assert msg == f"{latin}: not UTF-8 text (byte 0xe9 at offset 9); save the file as UTF-8"


@pytest.mark.parametrize("text, key", [
    ("train: {learning_rate: .inf}\n", "train.learning_rate"),
    ("net: {depth: .nan}\n", "net.depth"),
    ("chain: {pre: [{clip: {min: -.inf}}]}\n", "chain.pre[0].clip.min"),
])
def test_non_finite_values_in_files_refused(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    msg = _timed(load_yaml, path)
    assert f"config key {key!r}" in msg and "finite" in msg


@pytest.mark.parametrize("override, key", [
    ("train.learning_rate=.inf", "train.learning_rate"), ("net.depth=.nan", "net.depth"),
    ("train.max_iters=-.Inf", "train.max_iters")])
def test_non_finite_overrides_refused(tmp_path, override, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}' = .*finite"):
        parse_override(override)
    assert main(["upscale", str(_image(tmp_path)), str(tmp_path / "o.png"), "--scale", "2",
                 "--set", override, "-q"]) == 2


@pytest.mark.parametrize("data, match", [
    ({"net": {"depth": 10000}}, r"'net.depth': invalid value 10000; expected an integer in \[2, 64\]"),
    ({"net": {"width": 100000}}, r"'net.width'.*\[1, 1024\]"),
    ({"net": {"kernel_size": 101}}, r"'net.kernel_size'.*odd integer in \[1, 15\]"),
    ({"train": {"max_iters": 10**9}}, r"'train.max_iters'.*\[1, 1000000\]"),
    ({"train": {"crop_size": 10**5}}, r"'train.crop_size'.*\[8, 4096\]"),
    ({"net": {"depth": float("inf")}}, r"'net.depth': expected an integer.*not allowed"),
])
def test_engine_sizes_bounded(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_every_yaml_parse_goes_through_one_loader():
    """No module but zssr/yamldata.py parses YAML; no module but configs reads config files."""
    parsers = {"safe_load", "load", "full_load", "unsafe_load", "load_all", "safe_load_all",
               "compose", "parse", "scan"}
    offenders = []
    for pkg in ("zssr", "io_adapters", "pipeline", "configs", "workflows"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Attribute) and node.attr in parsers
                        and isinstance(node.value, ast.Name) and node.value.id == "yaml"
                        and rel != "zssr/yamldata.py"):
                    offenders.append(f"{rel}:{node.lineno} yaml.{node.attr}")
    assert offenders == []


def test_job_errors_are_usage_or_config_errors(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_bytes(b"inputs: [a]\noutput: \xff\n")
    with pytest.raises((ConfigError, UsageError), match="not UTF-8"):
        load_job(job)

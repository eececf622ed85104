"""The cluster recipes of docs/clusters.md (issue 17, item 7).

SLURM (``docs/recipes/slurm_run.py``, dask-jobqueue), end to end as far as this machine
allows: there is no SLURM here, so ``sbatch`` and ``scancel`` on PATH are stand-ins
written by the test.  ``sbatch`` does what a compute node does with a job: it reads the
script at submission and runs it with bash, in the background, in an empty folder of its
own, with a ``TMPDIR`` of its own and none of the submitter's environment (as with
``--export=NONE``: whatever the workers need, the job script must carry); it prints the
job id as sbatch does.  ``scancel`` sends SIGTERM to the job's process group.  Everything
else is real: the job scripts dask-jobqueue writes, the scheduler it starts in the
recipe's process, the ``dask worker`` (and nanny) processes the scripts start, the moto
S3 server of tests/test_s3.py as the only state the processes share (inputs and
``--out``), and ``zssr run`` launched by the recipe.

* A PNG + GeoTIFF + DICOM batch through two SLURM jobs gives outputs on S3 equal to the
  same batch run synchronously into a local folder (PNG and GeoTIFF bytes, DICOM pixels);
  each submitted script books one CPU and ``--mem``, runs one worker with one thread,
  ``OMP_NUM_THREADS=1``, its local directory on the node's ``TMPDIR`` (where dask's
  scratch space then is) and exports the ``AWS_*`` variables; the recipe cancels the jobs
  when it ends (their processes are gone) and never prints the secret.
* ``--dry-run`` prints the job script (the secret masked) and the ``zssr run`` command
  (``--torch-threads`` = ``--cores``, ``--scheduler`` the cluster's) and submits nothing;
  a local ``--out`` or a ``--scheduler`` of the user's is refused (exit 2) before any job.

Kubernetes (``docs/recipes/kube_run.py``): no cluster here, so not run.  What is checked
is the ``DaskCluster`` resource the recipe builds with dask-kubernetes' own
``make_cluster_spec``: valid under the operator's own CRD schema (the helm chart's
``crds/daskcluster.yaml`` shipped in the package), with no field the API server would
prune, and the threads, memory, scratch volume and environment docs/clusters.md promises,
credentials only as references to a Secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from _run_helpers import pixels
from conftest import DATA, require
from test_s3 import BUCKET, SECRET, s3  # noqa: F401 - the server fixture

from pipeline.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "docs" / "recipes"
PNG = DATA / "io" / "plain" / "butterfly_48x64.png"
TIF = DATA / "io" / "geotiff" / "landsat_64x80.tif"
DCM = DATA / "dicom" / "CT_small.dcm"
OUTPUTS = ["CT_small_x2.dcm", "butterfly_48x64_x2.png", "landsat_64x80_x2.tif"]
TINY = ["--set", "train.max_iters=3", "--set", "net.depth=3", "--set", "net.width=4",
        "--set", "infer.back_projection_iters=1", "--set", "train.crop_size=16",
        "--tile", "32", "--seed", "0", "--scale", "2", "-q"]

SBATCH = '''#!{python}
"""sbatch stand-in (tests/test_cluster_recipes.py): a compute node running the job."""
import subprocess, sys
from pathlib import Path

state = Path({state!r})
script = Path(sys.argv[-1]).read_text()  # read at submission, as sbatch does
n = 1000
while True:
    n += 1
    job = state / str(n)
    try:
        job.mkdir()
        break
    except FileExistsError:
        pass
(job / "cwd").mkdir()
(job / "tmp").mkdir()
(job / "job.sh").write_text(script)
env = {{"PATH": "/usr/bin:/bin", "HOME": str(job / "cwd"), "TMPDIR": str(job / "tmp"),
       "SLURM_JOB_ID": str(n), "LANG": "C.UTF-8"}}
with open(job / "out.log", "wb") as out:
    proc = subprocess.Popen(["bash", str(job / "job.sh")], cwd=job / "cwd", env=env,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
(job / "pid").write_text(str(proc.pid))
print(f"Submitted batch job {{n}}")
'''

SCANCEL = '''#!{python}
"""scancel stand-in: SIGTERM to the job's process group."""
import os, signal, sys
from pathlib import Path

state = Path({state!r})
for job in sys.argv[1:]:
    (state / job / "cancelled").write_text("")
    try:
        os.killpg(int((state / job / "pid").read_text()), signal.SIGTERM)
    except ProcessLookupError:
        pass
'''


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def slurm(tmp_path: Path):
    """``(PATH, jobs folder)``: the stand-in ``sbatch``/``scancel`` and where each job is
    (``<jobs>/<id>/``: ``job.sh``, ``cwd/``, ``tmp/``, ``out.log``, ``pid``)."""
    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in (("sbatch", SBATCH), ("scancel", SCANCEL)):
        (bin_dir / name).write_text(text.format(python=sys.executable, state=str(jobs)))
        (bin_dir / name).chmod(0o755)
    yield f"{bin_dir}{os.pathsep}{os.environ['PATH']}", jobs
    for pid in jobs.glob("*/pid"):  # whatever a failed test left running
        try:
            os.killpg(int(pid.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def direct(s3, monkeypatch):  # noqa: F811
    """The S3 server itself (not the relay in this process) for every process."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{s3.upstream}")
    monkeypatch.setenv("AWS_S3_ENDPOINT", f"127.0.0.1:{s3.upstream}")
    return s3


def _recipe(script: str, args: list[str], path: str, timeout: float
            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(RECIPES / script), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- SLURM


@pytest.mark.slow
def test_slurm_recipe_runs_the_batch_on_s3(direct, slurm, tmp_path: Path) -> None:
    path, jobs = slurm
    for src in (PNG, TIF, DCM):
        direct.client.upload_file(str(src), BUCKET, f"cr-in/{src.name}")
    inputs = [f"s3://{BUCKET}/cr-in/{src.name}" for src in (PNG, TIF, DCM)]
    assert main(["run", *inputs, "--out", str(tmp_path / "local"), "--scheduler",
                 "synchronous", "--torch-threads", "1", *TINY]) == 0

    done = _recipe("slurm_run.py", ["--jobs", "2", "--memory", "3GiB", "--walltime",
                                    "00:10:00", "--scheduler-host", "127.0.0.1",
                                    "--dashboard-address", ":0", "--wait", "120", "--",
                                    *inputs, "--out", f"s3://{BUCKET}/cr-run", *TINY],
                   path, timeout=300)
    logs = "".join((j / "out.log").read_text() for j in sorted(jobs.iterdir())
                   if (j / "out.log").exists())
    assert done.returncode == 0, done.stderr[-3000:] + logs[-3000:]
    assert SECRET not in done.stdout + done.stderr

    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name in OUTPUTS:
        direct.direct.download_file(BUCKET, f"cr-run/outputs/{name}", str(fetched / name))
        local = tmp_path / "local" / "outputs" / name
        np.testing.assert_array_equal(pixels(fetched / name), pixels(local), err_msg=name)
        if not name.endswith(".dcm"):
            assert (fetched / name).read_bytes() == local.read_bytes(), name
    report = json.loads(direct.direct.get_object(Bucket=BUCKET, Key="cr-run/report.json")[
        "Body"].read())
    assert report["summary"]["counts"]["finalized"] == 3

    submitted = sorted(jobs.iterdir())
    assert len(submitted) == 2
    for job in submitted:
        script = (job / "job.sh").read_text()
        for line in ("#SBATCH --cpus-per-task=1", "#SBATCH --mem=3G", "#SBATCH -t 00:10:00",
                     "export OMP_NUM_THREADS=1", 'export TMPDIR="${TMPDIR:-/tmp}"',
                     f"export AWS_ENDPOINT_URL=http://127.0.0.1:{direct.upstream}",
                     f"export AWS_SECRET_ACCESS_KEY={SECRET}"):
            assert line in script.splitlines(), (line, script)
        worker = script.splitlines()[-1]
        assert f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:" in worker
        for flag in ("--nthreads 1 ", "--memory-limit 3.00GiB ", '--local-directory "$TMPDIR"'):
            assert flag in worker, (flag, worker)
        # the worker's scratch was the node's TMPDIR; nothing went to its start folder
        assert (job / "tmp" / "dask-scratch-space").is_dir(), sorted((job / "tmp").iterdir())
        assert list((job / "cwd").iterdir()) == []
        assert "Registered to" in (job / "out.log").read_text()
        # closed by the recipe: cancelled, and the job's processes are gone
        assert (job / "cancelled").exists()
        pgid = int((job / "pid").read_text())
        deadline = time.monotonic() + 30
        while _alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pgid), f"job {job.name} still running after scancel"


def test_slurm_dry_run_prints_script_and_command(slurm, monkeypatch) -> None:
    path, jobs = slurm
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dry-run-secret-never-printed")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://objects.example:9000")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "60")
    done = _recipe("slurm_run.py", ["--dry-run", "--cores", "3", "--memory", "6GiB",
                                    "--queue", "cpu", "--account", "proj",
                                    "--job-extra=--gres=gpu:1", "--env", "GDAL_HTTP_TIMEOUT",
                                    "--scheduler-host", "127.0.0.1", "--dashboard-address",
                                    ":0", "--", "s3://b/in/", "--out", "s3://b/run",
                                    "--scale", "2"], path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dry-run-secret-never-printed" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for line in ("#SBATCH -p cpu", "#SBATCH -A proj", "#SBATCH --cpus-per-task=3",
                 "#SBATCH --mem=6G", "#SBATCH --gres=gpu:1", "export OMP_NUM_THREADS=1",
                 "export AWS_SECRET_ACCESS_KEY=***",
                 "export AWS_ENDPOINT_URL=http://objects.example:9000",
                 "export GDAL_HTTP_TIMEOUT=60"):
        assert line in lines, (line, done.stdout)
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1 " in worker and "--memory-limit 6.00GiB" in worker
    command = lines[-1].split()
    assert command[:5] == ["zssr", "run", "s3://b/in/", "--out", "s3://b/run"]
    assert command[command.index("--torch-threads") + 1] == "3"
    assert command[command.index("--scheduler") + 1].startswith("tcp://127.0.0.1:")
    assert list(jobs.iterdir()) == []  # nothing submitted


@pytest.mark.parametrize("zssr_args, message", [
    (["in.png", "--out", "runs/r1"], r"--out runs/r1: the workers share no disk"),
    (["in.png"], r"--out None: the workers share no disk"),
    (["s3://b/in.png", "--out", "s3://b/r", "--scheduler", "tcp://h:8786"],
     r"--scheduler: the recipe's cluster is the scheduler"),
])
def test_slurm_recipe_refuses_before_any_job(slurm, zssr_args, message) -> None:
    path, jobs = slurm
    done = _recipe("slurm_run.py", ["--", *zssr_args], path, timeout=60)
    assert done.returncode == 2
    assert message.replace("\\", "") in done.stderr.replace("\\", "")
    assert list(jobs.iterdir()) == []


# ----------------------------------------------------------------------------- Kubernetes


def _kube_run():
    try:
        import dask_kubernetes.operator  # noqa: F401
    except ImportError:
        require(False, "dask-kubernetes (pip install -e '.[test]')")
    saved = list(sys.path)
    sys.path.insert(0, str(RECIPES))
    try:
        import kube_run  # it puts its folder on sys.path too, for cluster_run
    finally:
        sys.path[:] = saved
    return kube_run


def _crd_schema() -> dict:
    import dask_kubernetes

    crd = (Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" /
           "dask-kubernetes-operator" / "crds" / "daskcluster.yaml")
    doc = yaml.safe_load(crd.read_text())
    (version,) = [v for v in doc["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _pruned(value, schema: dict, where: str = "") -> list[str]:
    """Fields of ``value`` the schema does not declare: the API server drops them."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                found += _pruned(item, schema["properties"][key], f"{where}.{key}")
            elif not isinstance(schema.get("additionalProperties"), dict):
                found.append(f"{where}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += _pruned(item, schema["items"], f"{where}[{i}]")
    return found


def _spec(**kwargs) -> dict:
    environ = {"AWS_ENDPOINT_URL": "http://objects.example:9000", "AWS_DEFAULT_REGION": "eu-1",
               "AWS_SECRET_ACCESS_KEY": "k8s-secret-never-in-the-spec",
               "AWS_ACCESS_KEY_ID": "k8s-key-id-never-in-the-spec", "HOME": "/home/me"}
    args = {"name": "zssr", "image": "registry.example/zssr:0.1.0", "workers": 3,
            "environ": environ, "secret": "zssr-s3", "cores": 2, "memory": "6Gi"}
    return _kube_run().cluster_spec(**{**args, **kwargs})


def test_kube_spec_valid_under_the_operators_schema() -> None:
    import jsonschema

    spec = _spec()
    schema = _crd_schema()
    jsonschema.validate(spec, schema)
    # apiVersion, kind and metadata are every object's, outside a CRD's schema
    assert sorted(spec) == ["apiVersion", "kind", "metadata", "spec"]
    assert _pruned(spec["spec"], schema["properties"]["spec"], ".spec") == []
    # the check sees a field the API server would drop, and a wrong type
    bad = json.loads(json.dumps(spec))
    bad["spec"]["worker"]["spec"]["containers"][0]["volumeMount"] = []
    assert _pruned(bad["spec"], schema["properties"]["spec"], ".spec") == [
        ".spec.worker.spec.containers[0].volumeMount"]
    bad["spec"]["worker"]["replicas"] = "3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_kube_spec_has_what_the_doc_promises() -> None:
    spec = _spec()
    text = json.dumps(spec)
    assert "never-in-the-spec" not in text and "/home/me" not in text
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3
    (container,) = worker["spec"]["containers"]
    assert container["image"] == "registry.example/zssr:0.1.0"
    args = container["args"]
    assert args[:2] == ["dask", "worker"]
    for flag, value in (("--nthreads", "1"), ("--memory-limit", "6Gi"),
                        ("--local-directory", "/scratch")):
        assert args[args.index(flag) + 1] == value
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "6Gi"},
                                      "limits": {"cpu": "2", "memory": "6Gi"}}
    assert container["volumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert worker["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    env = {e["name"]: e for e in container["env"]}
    values = {k: e["value"] for k, e in env.items() if "value" in e}
    assert values == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                      "OPENBLAS_NUM_THREADS": "1", "TMPDIR": "/scratch",
                      "AWS_ENDPOINT_URL": "http://objects.example:9000",
                      "AWS_DEFAULT_REGION": "eu-1"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "zssr-s3", "key": name,
                                                           "optional": True}}
    (scheduler,) = spec["spec"]["scheduler"]["spec"]["containers"]
    assert not any(e["name"].startswith("AWS_") for e in scheduler["env"])
    # without a Secret (the pods' own role): no credential variable at all
    bare = _spec(secret=None)["spec"]["worker"]["spec"]["containers"][0]["env"]
    assert not any("valueFrom" in e for e in bare)


def test_kube_print_spec_is_the_resource(slurm) -> None:
    _kube_run()
    path, _ = slurm
    done = _recipe("kube_run.py", ["--image", "registry.example/zssr:0.1.0", "--print-spec",
                                   "--secret", "zssr-s3", "--", "s3://b/in/", "--out",
                                   "s3://b/run"], path, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["kind"] == "DaskCluster" and printed["metadata"]["name"] == "zssr"
    assert printed["spec"]["worker"]["spec"]["volumes"][0]["name"] == "scratch"

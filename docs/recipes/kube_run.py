"""``zssr run`` on Kubernetes through the dask-kubernetes operator (docs/clusters.md).

Not run against a Kubernetes cluster by the tests (none is available to them): what they
check is the ``DaskCluster`` resource this builds, against the operator's own schema.

Needs the Dask operator installed in the cluster (``helm install --repo
https://helm.dask.org dask-kubernetes-operator``), an image with zssr installed at the
versions of this environment (zssr, dask, distributed, torch), and a Secret holding the
object storage credentials::

    pip install 'zssr-pipeline[kubernetes]'
    kubectl create secret generic zssr-s3 --from-literal=AWS_ACCESS_KEY_ID=... \\
        --from-literal=AWS_SECRET_ACCESS_KEY=...
    python docs/recipes/kube_run.py --image registry.example/zssr:0.1.0 --workers 8 \\
        --memory 6Gi --secret zssr-s3 -- s3://bucket/scenes/ --out s3://bucket/runs/r1 --scale 2

Everything after ``--`` is ``zssr run``'s (``--out`` must be ``s3://``); the recipe adds
``--scheduler`` and ``--torch-threads``.  Credentials reach the pods only from the Secret
(``secretKeyRef``), never by value; the endpoint and region variables of this shell are
copied by value.  ``--print-spec`` prints the ``DaskCluster`` resource (for ``kubectl
apply -f -`` and then ``zssr run --scheduler``) and creates nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_run import (  # noqa: E402 - the recipes' shared module, beside this file
    THREAD_ENV,
    RecipeError,
    recipe_args,
    run_on,
    split_argv,
)

#: object storage credentials: taken from the Secret, never copied by value
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: where the object storage is, copied by value from this shell when set
ENDPOINT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT", "AWS_HTTPS",
                "AWS_VIRTUAL_HOSTING", "AWS_DEFAULT_REGION", "AWS_REGION")
#: the worker's node-local scratch: an emptyDir volume mounted here
SCRATCH = "/scratch"


def worker_env(environ: Mapping[str, str], *, secret: str | None) -> list[dict[str, Any]]:
    """The worker container's ``env``: threads, ``TMPDIR`` on the scratch volume, the
    endpoint variables of ``environ`` by value, the credentials from ``secret``."""
    plain = {**THREAD_ENV, "TMPDIR": SCRATCH,
             **{k: environ[k] for k in ENDPOINT_ENV if k in environ}}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    if secret:
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k,
                                                            "optional": True}}}
                for k in CREDENTIALS]
    return env


def cluster_spec(*, name: str, image: str, workers: int, environ: Mapping[str, str],
                 secret: str | None, cores: int = 1, memory: str = "4Gi",
                 scratch_size: str = "20Gi") -> dict[str, Any]:
    """The ``DaskCluster`` resource, built by dask-kubernetes' ``make_cluster_spec`` and
    then given zssr's settings: workers of one Dask thread with ``cores`` CPUs for torch
    and ``memory`` (requests = limits, the worker's memory limit the same), an emptyDir
    scratch volume as local directory and ``TMPDIR``; the scheduler small, without
    credentials."""
    from dask_kubernetes.operator import make_cluster_spec

    resources = {"requests": {"cpu": str(cores), "memory": memory},
                 "limits": {"cpu": str(cores), "memory": memory}}
    spec = make_cluster_spec(
        name=name, image=image, n_workers=workers, resources=resources,
        env=worker_env(environ, secret=secret),
        worker_command=f"dask worker --nthreads 1 --memory-limit {memory} "
                       f"--local-directory {SCRATCH}")
    pod = spec["spec"]["worker"]["spec"]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": scratch_size}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH}]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["env"] = [{"name": k, "value": v} for k, v in THREAD_ENV.items()]
    scheduler["resources"] = {"requests": {"cpu": "1", "memory": "2Gi"},
                              "limits": {"cpu": "1", "memory": "2Gi"}}
    return spec


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    own, zssr_args = split_argv(argv)
    p = argparse.ArgumentParser(prog="kube_run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True, help="an image with zssr installed")
    p.add_argument("--name", default="zssr", help="the DaskCluster's name (zssr)")
    p.add_argument("--namespace", default=None)
    p.add_argument("--workers", type=int, default=2, help="worker pods (2)")
    p.add_argument("--cores", type=int, default=1, help="CPUs per worker, torch's threads (1)")
    p.add_argument("--memory", default="4Gi", help="memory per worker (4Gi)")
    p.add_argument("--scratch-size", default="20Gi", help="emptyDir size limit (20Gi)")
    p.add_argument("--secret", default=None,
                   help="a Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
                        "(and AWS_SESSION_TOKEN); none: the pods' own role")
    p.add_argument("--wait", type=float, default=1800,
                   help="seconds to wait for the workers (1800)")
    p.add_argument("--print-spec", action="store_true",
                   help="print the DaskCluster resource as YAML; create nothing")
    args = p.parse_args(own)
    if args.workers < 1 or args.cores < 1:
        raise RecipeError(f"--workers {args.workers} --cores {args.cores}: both must be >= 1")
    return args, zssr_args


def main(argv: Sequence[str] | None = None) -> int:
    got = recipe_args(parse_args, argv, "kube_run.py")
    if got is None:
        return 2
    args, zssr_args = got
    spec = cluster_spec(name=args.name, image=args.image, workers=args.workers,
                        environ=os.environ, secret=args.secret, cores=args.cores,
                        memory=args.memory, scratch_size=args.scratch_size)
    if args.print_spec:
        import yaml

        print(yaml.safe_dump(spec, sort_keys=False), end="")
        return 0
    from dask_kubernetes.operator import KubeCluster

    cluster = KubeCluster(custom_cluster_spec=spec, namespace=args.namespace,
                          shutdown_on_close=True)
    try:
        return run_on(cluster, zssr_args, workers=args.workers, torch_threads=args.cores,
                      wait=args.wait)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())

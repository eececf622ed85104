"""``zssr run``: the resumable Dask graph over many images.

``inputs`` expands input specs (``remote_inputs``: URLs, S3 prefixes and patterns);
``config`` loads the run settings; ``rundir`` is the run folder (manifest, claims,
markers); ``tasks``/``finalize``/``state`` are the graph's tasks and their bookkeeping;
``graph`` runs it on a scheduler; ``report`` draws the run report; ``stac_run`` writes
``--stac-item``'s Items and Collection, ``upload`` sends outputs to
``--output-prefix``.  Imports :mod:`pipeline.image`,
:mod:`pipeline.catalog` and :mod:`pipeline.steps`.
"""

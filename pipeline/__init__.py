"""The pipeline: files in, files out, around the array-only engine :mod:`zssr`.

Sub-packages by concern, arrows running one way (``tests/test_house.py`` checks it)::

    cli      the zssr command and its subcommands
    runs     zssr run: inputs, run folder, Dask graph, tasks, report
    catalog  provenance and STAC, in and out
    image    the per-image job: step plan, training, tile inference, upscale loop
    steps    preprocessing chains
    errors, source, locking   foundation modules every floor may use
"""

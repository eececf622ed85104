"""What describes an output: provenance tags, STAC Items written beside outputs and
STAC Items read as inputs.  Imports :mod:`pipeline.image` (the job's settings)."""

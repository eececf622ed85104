"""The per-image job: one image, one list of SR steps, one train→infer loop.

``plan`` turns a job into its :class:`~pipeline.image.plan.ImageStep` list (one jump,
``scale_steps`` or the paper's gradual steps); ``job`` holds the job's settings and the
per-step training and tile inference; ``upscale`` is ``zssr upscale``'s loop over the
steps; ``halo``, ``budget``, ``kernel_estimate`` and ``kernel_io`` are what a step needs
to be planned; ``volume`` is the through-plane variant; ``evaluate`` scores benchmark
folders.  Imports only :mod:`pipeline.steps` and the foundation modules.
"""

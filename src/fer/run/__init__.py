"""Run plumbing: what lets a training run, or a sweep of them, be found, resumed and trusted.

Where a run lives and how ``resume=true`` finds it again (:mod:`~fer.run.resume`), what it leaves
in its folder (:mod:`~fer.run.rundir`), checkpoint files (:mod:`~fer.run.checkpoints`), its
``predictions.npz``, which scoring and distillation both read (:mod:`~fer.run.predictions_file`), the
Lightning callbacks and CSV logger that carry a run across a resume (:mod:`~fer.run.callbacks`,
:mod:`~fer.run.loggers`), a sweep that outlives its failing jobs (:mod:`~fer.run.sweep`), and the
atomic file writes that they, ``predictions.npz`` and the data cache use (:mod:`~fer.run.atomic`),
and the hardware a run is on: accelerator checks, ``precision: auto`` (:mod:`~fer.run.hardware`).
"""

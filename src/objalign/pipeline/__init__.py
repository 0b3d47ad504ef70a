"""The application: a run's stages chained over a run folder (sample -> crop -> embed -> align -> report).

:func:`run` chains the stages and reuses each one whose key still matches; :func:`plan` says what a run would
do; :func:`sweep` runs config variants. The stages up to the embedding stores live in ``objalign.data``,
``objalign.crops`` and ``objalign.embed``; the last two are here: :mod:`objalign.pipeline.align` (the run's
arrays through :func:`objalign.evaluate_alignment`'s engine) and :mod:`objalign.pipeline.report`.
"""

from objalign.pipeline.chain import STAGES, load_sweep, plan, run, stage_function, sweep

__all__ = ["STAGES", "run", "plan", "sweep", "load_sweep", "stage_function"]

"""``run``: chain the stages, reusing each one whose key still matches."""

from __future__ import annotations

import time
from pathlib import Path

from .config import RunConfig

STAGES = ("sample", "crop", "embed", "align", "report")


def stage_function(name: str):
    if name == "sample":
        from .data.stage import run_sample as f
    elif name == "crop":
        from .crops.stage import run_crop as f
    elif name == "embed":
        from .embed.stage import run_embed as f
    elif name == "align":
        from .align.stage import run_align as f
    else:
        from .report.stage import run_report as f
    return f


def run(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True, log=print) -> dict:
    """Run every stage into ``out``; returns ``report.json``'s content.

    A stage whose inputs and settings are unchanged since it last ran is reused, not recomputed
    (``force=True`` recomputes everything).
    """
    import json

    from .runs import ensure_out

    out = ensure_out(out)
    for name in STAGES:
        t0 = time.time()
        f = stage_function(name)
        kwargs = {"force": force}
        if name in ("crop", "embed"):
            kwargs["progress"] = progress
        rec = f(cfg, out, **kwargs)
        how = "reused" if rec.get("reused") else f"done in {time.time() - t0:.1f} s"
        log(f"[{name:<6}] {how}")
    return json.loads((out / "report.json").read_text())

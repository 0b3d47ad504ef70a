"""``run``: chain the stages, reusing each one whose key still matches."""

from __future__ import annotations

import json
import time
from pathlib import Path

from objalign.config import RunConfig, load_config
from objalign.crops import CROP_MODES
from objalign.crops.stage import run_crop
from objalign.data.plan import data_plan
from objalign.data.stage import run_sample
from objalign.embed.stage import run_embed
from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS
from objalign.errors import ObjalignError
from objalign.pipeline.align import run_align
from objalign.pipeline.report import run_report
from objalign.report.compare import compare_runs
from objalign.runs import cache_dir, ensure_out, stage_record

STAGES = ("sample", "crop", "embed", "align", "report")


STAGE_FUNCTIONS = {"sample": run_sample, "crop": run_crop, "embed": run_embed, "align": run_align,
                   "report": run_report}


def stage_function(name: str):
    """The function that runs stage ``name`` (one of :data:`STAGES`): ``f(cfg, out, force=...)``."""
    return STAGE_FUNCTIONS[name]


def run(cfg: RunConfig, out: str | Path, force: bool = False, progress: bool = True, log=print) -> dict:
    """Run every stage into ``out``; returns ``report.json``'s content.

    A stage whose inputs and settings are unchanged since it last ran is reused, not recomputed
    (``force=True`` recomputes everything).
    """


    if cfg.compute.num_workers > 1:
        raise ObjalignError("--num-workers (the static partition) splits one stage between processes: run "
                            "`objalign crop ...` and `objalign embed ...` with it, then `objalign run` to finish")
    out = ensure_out(out)
    for name in STAGES:
        t0 = time.time()
        f = stage_function(name)
        kwargs = {"force": force}
        if name in ("sample", "crop", "embed"):
            kwargs["progress"] = progress
        rec = f(cfg, out, **kwargs)
        how = "reused" if rec.get("reused") else f"done in {time.time() - t0:.1f} s"
        log(f"[{name:<6}] {how}")
    return json.loads((out / "report.json").read_text())


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> dict[str, RunConfig]:
    """Read a sweep file: ``base`` (a config, relative to the sweep file) and ``variants`` (name -> overrides).

    ``overrides`` apply to every variant (before the variant's own).
    """
    import yaml


    p = Path(path)
    doc = yaml.safe_load(p.read_text()) if p.is_file() else None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict) or not doc["variants"]:
        raise ObjalignError(f"{p}: a sweep file needs 'variants:' (name -> {{key: value}}) and optionally 'base:'")
    base = doc.get("base")
    base_path = (p.parent / base) if base else None
    out = {}
    for name, changes in doc["variants"].items():
        if not isinstance(changes, dict):
            raise ObjalignError(f"{p}: variant {name!r} must map config keys to values, e.g. crop.mode: gt-mask")
        out[str(name)] = load_config(base_path, list(overrides or []) + [f"{k}={v}" for k, v in changes.items()])
    return out


def sweep(path: str | Path, out: str | Path, overrides: list[str] | None = None, force: bool = False,
          progress: bool = True, log=print) -> str:
    """Run every variant of a sweep file into ``out/<variant>`` and return the side-by-side comparison."""

    variants = load_sweep(path, overrides)
    dirs = []
    for name, cfg in variants.items():
        log(f"== variant {name}")
        run(cfg, Path(out) / name, force=force, progress=progress, log=log)
        dirs.append(Path(out) / name)
    return compare_runs(dirs, json_out=Path(out) / "compare.json")


def plan(cfg: RunConfig, out: str | Path) -> str:
    """The resolved plan of ``run`` as text: data (and what would be downloaded), models, sizes, outputs.

    Touches no network and loads no model.
    """

    c, e, a = cfg.crop, cfg.embed, cfg.align
    lines = ["objalign run --dry-run: nothing is computed", ""] + data_plan(cfg)
    lines.append(f"crop      {c.mode} ({CROP_MODES.entry(c.mode).description}), padding {c.padding}, "
                 f"{'square' if c.square else 'aspect as is'}, background {c.background}"
                 + (f"; SAM {c.sam_path_or_model()} on {c.device}/{c.dtype}" if c.mode == "sam" else ""))
    ve, te = VISION_ENCODERS.entry(e.vision.name), TEXT_ENCODERS.entry(e.text.name)

    def layers(spec) -> str:
        shown = spec if isinstance(spec, str) else list(spec)
        return "" if spec == "last" else f", layers {shown} (the run aligns the last)"
    lines.append(f"vision    {e.vision.name}: {ve.description}; pooling {e.vision.pooling}, "
                 f"batch {e.vision.batch_size}, {e.vision.device}/{e.vision.dtype}"
                 + (f", weights from {e.vision.model_path}" if e.vision.model_path else "")
                 + (f", original checkpoint {e.vision.checkpoint}" if e.vision.checkpoint else "")
                 + (f", preprocess {e.vision.preprocess}" if e.vision.preprocess != "default" else "")
                 + layers(e.vision.layers)
                 + (f", stored as {e.storage_dtype}" if e.storage_dtype != "float32" else ""))
    lines.append(f"text      {e.text.name}: {te.description}; prompt {e.text.template!r}"
                 + (f", weights from {e.text.model_path}" if e.text.model_path else "")
                 + (f", original checkpoint {e.text.checkpoint}" if e.text.checkpoint else "")
                 + (f", pooling {e.text.pooling}" if e.text.pooling != "default" else "")
                 + layers(e.text.layers))
    lines.append(f"align     {', '.join(a.methods)} (+ baselines {', '.join(a.baselines) or 'none'}); PCA to <= "
                 f"{a.common_dim}; {a.cv_folds}-fold grouped CV over {len(a.alphas)} alphas x {len(a.gammas)} gammas; "
                 f"protocols {', '.join(a.protocols)}; {a.n_permutations} permutations ({a.null} null), "
                 f"{a.n_bootstrap} bootstrap resamples")
    cp = cfg.compute
    where = ("this process" if cp.executor == "local" else
             f"Ray ({cp.ray_address or 'a private Ray on this machine'}; "
             f"{f'{cp.workers} worker(s)' if cp.workers else 'one worker per GPU'})")
    lines.append(f"compute   crop with a segmenter and vision embedding on {where}; shards of {c.shard_size} "
                 f"(crop) / {e.shard_size} (embed) objects"
                 + (f"; this process: share {cp.worker_index} of {cp.num_workers}" if cp.num_workers > 1 else ""))

    shared = cache_dir(cfg.cache.dir)
    lines.append(f"stores    {f'shared cache {shared}' if shared else 'inside the run folder'}")
    done = [st for st in STAGES if stage_record(Path(out), st)]
    lines.append(f"outputs   {out}/ (report.html, report.txt, report.json, figures, config.yaml)"
                 + (f"; stages already there: {', '.join(done)}" if done else ""))
    return "\n".join(lines)

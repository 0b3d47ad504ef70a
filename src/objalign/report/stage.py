"""The ``report`` stage: ``report.json``, ``report.txt``, ``alignment_hist.png`` and ``config.yaml``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..config import RunConfig, dump_config
from ..embed.store import atomic_write_json
from ..runs import ensure_out, stage_key, stage_record, write_stage

COLUMNS = ("method", "split", "r2", "cosine_mean", "residual_mean", "residual_median", "top1", "top5", "mean_rank")


def build_report(out: Path) -> dict:
    """Assemble ``report.json``'s content from the stage records and result tables of a run."""
    sample = stage_record(out, "sample")["summary"]
    crop = stage_record(out, "crop")["summary"]
    embed = stage_record(out, "embed")["summary"]
    rows = json.loads((out / "align" / "results.json").read_text())
    return {
        "dataset": sample["dataset"],
        "dataset_fingerprint": sample["dataset_fingerprint"],
        "n_instances": embed["n_vision"],
        "n_instances_sampled": sample["n_instances"],
        "n_images": sample["n_images"],
        "n_categories": sample["n_categories"],
        "crop": crop,
        "vision_encoder": embed["vision_encoder"],
        "text_encoder": embed["text_encoder"],
        "n_skipped": embed["n_skipped"],
        "chance_top1": 1.0 / sample["n_categories"],
        "results": rows,
    }


def format_text(report: dict, title: str) -> str:
    v, t = report["vision_encoder"], report["text_encoder"]
    lines = [
        title, "=" * len(title), "",
        f"dataset        {report['dataset']} (fingerprint {report['dataset_fingerprint']})",
        f"instances      {report['n_instances']} embedded of {report['n_instances_sampled']} sampled, "
        f"{report['n_images']} images, {report['n_categories']} categories",
        f"crops          {report['crop']['mode']} (sources: {report['crop']['sources']}, "
        f"fallbacks: {report['crop']['n_fallback']})",
        f"vision         {v['name']} ({v['dim']}-d, pooling {v.get('pooling', '?')})",
        f"text           {t['name']} ({t['dim']}-d, prompt {t.get('template', '{}')!r})",
        f"chance top-1   {report['chance_top1']:.3f}", "",
    ]
    header = f"{'method':<14}{'split':<18}{'R2':>8}{'cos':>8}{'res.mean':>10}{'res.med':>9}{'top1':>7}{'top5':>7}{'rank':>7}"
    lines += [header, "-" * len(header)]
    for r in report["results"]:
        lines.append(f"{r['method']:<14}{r['split']:<18}{r['r2']:>8.3f}{r['cosine_mean']:>8.3f}"
                     f"{r['residual_mean']:>10.3f}{r['residual_median']:>9.3f}{r['top1']:>7.3f}{r['top5']:>7.3f}"
                     f"{r['mean_rank']:>7.2f}")
    lines.append("")
    for r in report["results"]:
        if r["hyperparameters"]:
            hp = ", ".join(f"{k}={v:.4g}" for k, v in r["hyperparameters"].items())
            lines.append(f"{r['method']}: {hp} (PCA to {r['pca_dim']}, {r['n_train']} training objects)")
    lines += ["", "R2: uniform average over text dimensions; cos/res: cosine and L2 residual between predicted and",
              "true text embeddings; top1/top5/rank: retrieval of the true category among all category embeddings."]
    return "\n".join(lines) + "\n"


def run_report(cfg: RunConfig, out: str | Path, force: bool = False) -> dict:
    out = ensure_out(out)
    started = time.time()
    key = cfg.section_key("report", extra={"align": stage_key(out, "align")})
    report = build_report(out)
    atomic_write_json(out / "report.json", report)
    (out / "report.txt").write_text(format_text(report, cfg.report.title))
    per = np.load(out / "align" / "per_instance.npz")
    methods = [r["method"] for r in report["results"]]
    per_method = {m: {"residual_l2": per[f"{m}__residual_l2"], "cosine": per[f"{m}__cosine"]} for m in methods}
    from .figures import residual_histogram

    residual_histogram(per_method, out / "alignment_hist.png",
                       f"held-out images: {report['vision_encoder']['name']} -> {report['text_encoder']['name']}")
    dump_config(cfg, out / "config.yaml")
    return {**write_stage(out, "report", key, {"files": ["report.json", "report.txt", "alignment_hist.png",
                                                          "config.yaml"]}, started), "reused": False}

"""Size and time of ``report.html``: the demo run and a made-up 3,000-object store, this tree beside a baseline.

    python bench/report.py --demo runs/demo [--objects 3000] [--against /path/to/baseline/src] [--work DIR]

``--demo`` is a finished demo run (``objalign run configs/demo.yaml --out runs/demo``); its report stage is run
again on a copy. The 3,000-object store is made up here, once, under ``--work``: 600 images (320 x 240 JPEG, five
objects each, 80 categories), a crop table with box windows and elliptic masks, structured embeddings and the
align stage's tables (ridge and kernel ridge; bootstrap on, permutations off — they change the tables, not the
report's cost). Each side runs ``run_report`` in its own process on its own copy of the run folder (the crop
images are read from the same place); the time is the report stage alone, the size is ``report.html``'s.

``--against SRC`` is a baseline source tree, e.g. ``git archive <commit> src | tar -x -C /tmp/base`` then
``--against /tmp/base/src``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
_RUN = """
import dataclasses, json, sys, time
import yaml
from objalign.config import ReportConfig, load_config
from objalign.pipeline.report import run_report
d = yaml.safe_load(open(sys.argv[1]))  # a baseline tree knows fewer report settings: leave the new ones out
known = {f.name for f in dataclasses.fields(ReportConfig)}
d["report"] = {k: v for k, v in (d.get("report") or {}).items() if k in known}
yaml.safe_dump(d, open(sys.argv[2] + ".yaml", "w"))
cfg = load_config(sys.argv[2] + ".yaml")
t = time.perf_counter()
run_report(cfg, sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def make_store(root: Path, n_objects: int = 3000, per_image: int = 5, n_categories: int = 80, seed: int = 0) -> Path:
    """A run folder (sample/crop/embed records, crop table, align tables) of ``n_objects`` made-up objects."""
    from PIL import Image

    from objalign.config import DataConfig, RunConfig, dump_config
    from objalign.crops.masks import mask_to_rle
    from objalign.crops.render import crop_window
    from objalign.evaluation.engine import evaluate
    from objalign.evaluation.settings import AlignConfig
    from objalign.pipeline.align import write_results
    from objalign.runs import write_stage
    from objalign.tables import write_table

    out = root / "run"
    if (out / "align" / "per_instance.npz").is_file():
        return out
    rng = np.random.default_rng(seed)
    W, H = 320, 240
    n_images = n_objects // per_image
    groups = np.repeat(np.arange(n_images), per_image)
    lab = rng.integers(0, n_categories, n_objects)
    colours = rng.integers(0, 256, (n_categories, 3))
    (root / "images").mkdir(parents=True, exist_ok=True)
    cols = {k: [] for k in ("annotation_id", "image_id", "file_name", "x", "y", "w", "h", "x0", "y0", "x1", "y1",
                            "mask_rle")}
    yy, xx = np.mgrid[:H, :W]
    for img in range(n_images):
        pix = (rng.normal(128, 30, (H, W, 3)) + np.linspace(-40, 40, W)[None, :, None]).clip(0, 255).astype(np.uint8)
        for i in range(img * per_image, (img + 1) * per_image):
            w, h = rng.integers(30, 120, 2)
            x, y = rng.integers(0, W - w), rng.integers(0, H - h)
            mask = ((xx - x - w / 2) / (w / 2)) ** 2 + ((yy - y - h / 2) / (h / 2)) ** 2 <= 1
            pix[mask] = colours[lab[i]]
            win = crop_window(x, y, w, h, 0.1, True, width=W, height=H)
            for k, v in zip(cols, (i + 1, img, f"{img:05d}.jpg", x, y, w, h, *win, json.dumps(mask_to_rle(mask)))):
                cols[k].append(v)
        Image.fromarray(pix).save(root / "images" / f"{img:05d}.jpg", quality=85)
    (out / "crop").mkdir(parents=True, exist_ok=True)
    write_table(out / "crop" / "crops.parquet",
                {k: np.asarray(v, dtype=object if k in ("file_name", "mask_rle") else None) for k, v in cols.items()})
    V, E = rng.normal(size=(n_categories, 64)), rng.normal(size=(n_categories, 32))
    E[:, :8] += V[:, :8]  # a shared part: the map can learn something
    X = V[lab] + 0.8 * rng.normal(size=(n_objects, 64))
    names = [f"category {j}" for j in range(n_categories)]
    cfg = AlignConfig(methods=("ridge", "kernel_ridge"), n_permutations=0, n_bootstrap=200, common_dim=32)
    res = evaluate(X, E[lab], groups, lab, E, cfg, names, np.arange(n_categories) + 1)
    write_results(out / "align", res, {"image_id": groups, "annotation_id": np.arange(n_objects) + 1})
    t = time.time()
    write_stage(out, "sample", "k", {"dataset": "made-up", "dataset_fingerprint": "bench", "n_instances": n_objects,
                                     "n_images": n_images, "n_categories": n_categories}, t)
    write_stage(out, "crop", "k", {"mode": "gt-mask", "sources": {"gt-mask": n_objects}, "n_fallback": 0}, t)
    write_stage(out, "embed", "k", {"n_vision": n_objects, "n_skipped": 0,
                                    "vision_encoder": {"name": "made-up-vision", "dim": 64},
                                    "text_encoder": {"name": "made-up-text", "dim": 32}}, t)
    write_stage(out, "align", "k", {}, t)
    (root / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    dump_config(RunConfig(data=DataConfig(kind="coco", root=str(root), images="images")), out / "config.yaml")
    return out


def time_report(src: Path, run: Path, scratch: Path) -> dict:
    """The report stage of a copy of ``run`` with the objalign of ``src``: seconds, report.html's bytes, images."""
    copy = scratch / run.name
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("embeddings", "crops-*"))
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, "-c", _RUN, str(run / "config.yaml"), str(copy)], env=env, cwd=HERE,
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{src}: the report stage failed:\n{res.stderr[-2000:]}")
    page = (copy / "report.html").read_text()
    return {"seconds": json.loads(res.stdout.strip().splitlines()[-1])["seconds"],
            "mb": len(page.encode()) / 1e6, "thumbnails": page.count("data:image/jpeg")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, help="a finished demo run folder")
    ap.add_argument("--objects", type=int, default=3000, help="objects in the made-up store (default 3000)")
    ap.add_argument("--against", type=Path, help="a baseline source tree (today's report)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "objalign-bench-report")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE / "src"))
    cases = ([("demo", args.demo.resolve())] if args.demo else [])
    t = time.perf_counter()
    cases.append((f"store-{args.objects}", make_store(args.work / f"store-{args.objects}", args.objects)))
    print(f"(made-up store ready in {time.perf_counter() - t:.1f} s)")
    sides = ([("today", args.against.resolve())] if args.against else []) + [("this", HERE / "src")]
    head = f"{'case':<12}" + "".join(f"{s + ' MB':>10}{s + ' s':>9}{'thumbs':>8}" for s, _ in sides)
    print(head + "\n" + "-" * len(head))
    for name, run in cases:
        line = f"{name:<12}"
        for side, src in sides:
            r = time_report(src, run, args.work / f"scratch-{side}")
            line += f"{r['mb']:>10.2f}{r['seconds']:>9.1f}{r['thumbnails']:>8d}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

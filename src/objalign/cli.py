"""The ``objalign`` command line: a thin layer over the library (heavy modules are imported lazily)."""

from __future__ import annotations

import argparse
import sys

from objalign.errors import ObjalignError

STAGE_HELP = {
    "sample": "sample object instances from the dataset -> sample/instances.parquet",
    "crop": "decide crop windows and masks -> crop/crops.parquet",
    "embed": "embed crops and category names -> embeddings/",
    "align": "fit PCA / ridge / kernel ridge maps; held-out images and categories, CIs, nulls -> align/",
    "report": "write report.txt, report.json, report.html, figures, config.yaml",
}


def default_out(config: str | None) -> str:
    """The run folder ``run`` uses without ``--out``: ``runs/<config file name without .yaml>`` (``runs/demo``)."""
    from pathlib import Path

    return str(Path("runs") / (Path(config).stem if config else "demo"))


def _add_config_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    p.add_argument("config", nargs="?", help="YAML config (default: the built-in demo settings)")
    p.add_argument("--out", required=out_required,
                   help="run folder (stages read and write here)" if out_required else
                   "run folder (default: runs/<config name>, runs/demo without a config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set sample.n=500 (repeatable)")
    p.add_argument("--vision", help="vision encoder name (see `objalign models`)")
    p.add_argument("--text", help="text encoder name")
    p.add_argument("--crop-mode", help="crop mode: box, gt-mask, ...")
    p.add_argument("--device", help="cpu, cuda, mps or auto (vision and text encoders)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="vision encoder precision (autocast; bfloat16/float16 are for GPUs)")
    p.add_argument("--vision-model-path", help="local folder with the vision model's weights (no network)")
    p.add_argument("--text-model-path", help="local folder with the text model's weights (no network)")
    p.add_argument("--mirror", help="base URL replacing the host of every archive and image URL fetched "
                                    "(data.mirror)")
    p.add_argument("--force", action="store_true", help="recompute even if a finished stage matches")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("compute (crop with a segmenter, embed)")
    g.add_argument("--executor", help="local (default) or ray (compute.executor)")
    g.add_argument("--workers", type=int, help="ray: worker actors (default: one per GPU; compute.workers)")
    g.add_argument("--ray-address", help="ray: 'auto' or host:port of a running cluster (default: a private Ray)")
    g.add_argument("--num-workers", type=int, help="static partition without Ray: number of processes (Slurm array)")
    g.add_argument("--worker-index", type=int, help="static partition: this process's index in [0, N)")
    g.add_argument("--cache", help="folder of stores shared across runs (cache.dir; default $OBJALIGN_CACHE, else "
                                   "inside the run folder)")


def _config_from_args(args):
    from objalign.config import load_config

    overrides = list(args.overrides)
    for flag, key in (("vision", "embed.vision.name"), ("text", "embed.text.name"), ("crop_mode", "crop.mode"),
                      ("vision_model_path", "embed.vision.model_path"), ("text_model_path", "embed.text.model_path"),
                      ("mirror", "data.mirror")):
        val = getattr(args, flag, None)
        if val is not None:
            overrides.append(f"{key}={val}")
    for flag, key in (("executor", "compute.executor"), ("workers", "compute.workers"),
                      ("ray_address", "compute.ray_address"), ("num_workers", "compute.num_workers"),
                      ("worker_index", "compute.worker_index"), ("cache", "cache.dir")):
        val = getattr(args, flag, None)
        if val is not None:
            overrides.append(f"{key}={val}")
    if getattr(args, "device", None):
        overrides += [f"embed.vision.device={args.device}", f"embed.text.device={args.device}"]
    if getattr(args, "dtype", None):
        overrides.append(f"embed.vision.dtype={args.dtype}")
    return load_config(args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    from objalign import __version__

    parser = argparse.ArgumentParser(
        prog="objalign",
        description="Measure how object-level vision embeddings align with language embeddings.",
        epilog="Start with: objalign run configs/demo.yaml --out runs/demo")
    parser.add_argument("--version", action="version", version=f"objalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage (reusing finished ones) and write the report")
    _add_config_args(p, out_required=False)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved plan (data, downloads, models, sizes, outputs) and run nothing")
    for name, text in STAGE_HELP.items():
        _add_config_args(sub.add_parser(name, help=text))

    p = sub.add_parser("data", help="datasets: generate the demo, download COCO 2017 or LVIS v1's annotations")
    dsub = p.add_subparsers(dest="data_command", metavar="DATASET")
    d = dsub.add_parser("demo", help="write the embedded demo dataset (COCO JSON + images)")
    d.add_argument("--out", required=True, help="destination folder")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--n-images", type=int, default=320)
    d = dsub.add_parser("coco2017", help="download COCO 2017 (resumable, verified, extracted atomically)")
    d.add_argument("--root", required=True, help="dataset folder (a copy laid out as COCO ships it is used as is)")
    d.add_argument("--split", choices=("train", "val", "all"), default="train")
    d.add_argument("--annotations-only", action="store_true", help="only annotations_trainval2017.zip (~241 MiB)")
    d.add_argument("--mirror", help="base URL replacing http://images.cocodataset.org")
    d.add_argument("--no-extract", action="store_true",
                   help="keep image archives zipped (then set data.images_from_zip: true)")
    d.add_argument("--no-official-checksums", action="store_true",
                   help="for a mirror serving repacked archives: check only the server's size and the zip CRCs")
    d.add_argument("--no-progress", action="store_true")
    d = dsub.add_parser("lvis", help="download LVIS v1's annotations into ROOT/annotations (resumable, verified); "
                                     "the images are COCO 2017's (objalign data coco2017)")
    d.add_argument("--root", required=True, help="dataset folder, e.g. the COCO 2017 root")
    d.add_argument("--split", choices=("train", "val"), default="val")
    d.add_argument("--mirror", help="base URL replacing https://dl.fbaipublicfiles.com (serving LVIS/<archive>)")
    d.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("sweep", help="run every variant of a sweep file (e.g. crop modes) and compare them")
    p.add_argument("config", help="sweep YAML: base config + variants, e.g. configs/demo_crop_ablation.yaml")
    p.add_argument("--out", required=True, help="folder; each variant runs in <out>/<variant>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every variant")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("matrix", help="every vision layer x text layer of several models (stores computed once), "
                                      "best layer pairs with corrected p-values")
    p.add_argument("config", help="matrix YAML: base config + vision and text encoders and layers, e.g. "
                                  "configs/demo_layers.yaml")
    p.add_argument("--out", required=True, help="folder for the stores, matrix.parquet, figures and matrix.html")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-config value for every cell, e.g. --set sample.n=500 (repeatable)")
    p.add_argument("--jobs", type=int, help="vision layers evaluated at once, in processes (matrix.jobs; default 1)")
    p.add_argument("--force", action="store_true",
                   help="recompute sample, crop and every block (stores are content-addressed and still reused)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("evaluate", help="your own embeddings (npy, npz, parquet): the report a run writes",
                       description="Evaluate embeddings you already have. FILE may name an array inside it: "
                                   "FILE.npz:KEY, FILE.parquet:COLUMN.")
    p.add_argument("config", nargs="?", help="YAML config whose align: and report: sections apply (optional)")
    p.add_argument("--vision", required=True, metavar="FILE", help="(n, d) vision features, one row per object")
    p.add_argument("--text", required=True, metavar="FILE",
                   help="(n, q) text features per object, or (c, q) per category with --labels indexing its rows")
    p.add_argument("--labels", required=True, metavar="FILE", help="(n,) each object's category")
    p.add_argument("--groups", metavar="FILE", help="(n,) image ids (default: every object its own image)")
    p.add_argument("--names", metavar="FILE", help="category names, one per category (.txt: one per line)")
    p.add_argument("--vocabulary", metavar="FILE",
                   help="(m, q) distractor name embeddings: open-vocabulary retrieval among the c + m names")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set align.n_permutations=200 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")

    p = sub.add_parser("compare", help="put several runs (model pairs, crop modes) side by side")
    p.add_argument("runs", nargs="+", help="run folders holding report.json")
    p.add_argument("--out", help="also write the comparison as JSON to this file")

    p = sub.add_parser("models", help="list registered encoders and crop modes")
    p.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'facebook/*'")

    p = sub.add_parser("cache", help="list or remove crop and embedding stores (a run folder's or the shared cache)")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    c = csub.add_parser("ls", help="list stores under a folder")
    c.add_argument("root", nargs="?", help="folder to search (default: $OBJALIGN_CACHE if set, else runs)")
    c = csub.add_parser("rm", help="remove stores")
    c.add_argument("paths", nargs="*", metavar="PATH", help="store folders (as `cache ls` prints them)")
    c.add_argument("--incomplete", metavar="ROOT", help="remove every unfinished store under ROOT instead")
    return parser


def _cmd_models(args) -> int:
    from objalign.crops import CROP_MODES
    from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS

    for title, reg in (("vision encoders", VISION_ENCODERS), ("text encoders", TEXT_ENCODERS),
                       ("crop modes", CROP_MODES)):
        items = reg.items(args.pattern)
        if items:
            print(f"{title}:")
            for n, desc in items:
                print(f"  {n:<34} {desc}")
    return 0


def _cmd_cache(args) -> int:
    import json

    from objalign.runs import cache_dir
    from objalign.stores import find_stores, remove_store

    if args.cache_command == "ls":
        root = args.root or cache_dir(None) or "runs"
        stores = find_stores(root)
        for s in stores:
            mf = json.loads((s / "manifest.json").read_text())
            size = sum(f.stat().st_size for f in s.rglob("*") if f.is_file())
            if mf.get("kind") == "crops":
                d = mf.get("key_fields", {}).get("decisions", {})
                what = (f"crops  mode={d.get('crop.mode', '?')}  objects={mf['key_fields'].get('n_instances', '?')}  "
                        f"shards={len(mf.get('bounds', []))}")
            else:
                enc = mf.get("key_fields", {}).get("encoder", {})
                what = (f"embeddings  encoder={enc.get('name', '?')}  dtype={enc.get('dtype', '-')}  "
                        f"vectors={mf.get('n_vectors', '?')}  skipped={len(mf.get('skipped', []))}")
            print(f"{s}  key={mf['key']}  {what}  complete={mf.get('complete')}  {size / 2**20:.1f} MiB")
        if not stores:
            print(f"no stores under {root}")
        return 0
    if args.cache_command == "rm":
        paths = list(args.paths)
        if args.incomplete:
            paths += [s for s in find_stores(args.incomplete)
                      if not json.loads((s / "manifest.json").read_text()).get("complete")]
        elif not paths:
            raise ObjalignError("cache rm: name the stores to remove (PATH ...) or pass --incomplete ROOT")
        for p in paths:
            remove_store(p)
            print(f"removed {p}")
        return 0
    raise ObjalignError("cache: expected `objalign cache ls [ROOT]` or `objalign cache rm PATH ...`")


def _cmd_evaluate(args) -> int:
    from objalign.config import load_config
    from objalign.pipeline.arrays import evaluate_files

    cfg = load_config(args.config, args.overrides)
    result = evaluate_files(args.vision, args.text, args.labels, args.out, cfg, groups=args.groups,
                            names=args.names, vocabulary=args.vocabulary)
    print(result.summary(cfg.report.title))
    print(f"report written to {args.out}/: report.html (open in a browser), report.txt, report.json, figures")
    return 0


def _cmd_data(args) -> int:
    if args.data_command == "demo":
        from objalign.data.demo import make_demo_dataset

        path = make_demo_dataset(args.out, seed=args.seed, n_images=args.n_images)
        print(f"demo dataset written: {path}")
        return 0
    if args.data_command == "coco2017":
        from objalign.data.download import download_coco2017

        got = download_coco2017(args.root, split=args.split, annotations_only=args.annotations_only,
                                mirror=args.mirror, progress=not args.no_progress, extract=not args.no_extract,
                                checksums={} if args.no_official_checksums else None)
        for split, path in got["annotations"].items():
            print(f"{split}: annotations {path}; images {got['images'].get(split, '(not requested)')}")
        return 0
    if args.data_command == "lvis":
        from objalign.data.download.lvis import download_lvis

        path = download_lvis(args.root, split=args.split, mirror=args.mirror, progress=not args.no_progress)
        print(f"{args.split}: annotations {path} (set data.annotations to it, or data.kind: lvis with data.split)")
        return 0
    raise ObjalignError("data: expected `objalign data demo --out DIR`, `objalign data coco2017 --root DIR` or "
                        "`objalign data lvis --root DIR`")


def _cmd_stages(args) -> int:
    """``run`` and the single stages (``sample``, ``crop``, ``embed``, ``align``, ``report``)."""
    cfg = _config_from_args(args)
    progress = not args.no_progress and sys.stderr.isatty()
    if args.command == "run" and args.out is None:
        args.out = default_out(args.config)
        print(f"run folder: {args.out} (the default; choose another with --out)")
    if args.command == "run" and args.dry_run:
        from objalign.pipeline.chain import plan

        print(plan(cfg, args.out))
        return 0
    if args.command == "run":
        from objalign.pipeline.chain import run

        report = run(cfg, args.out, force=args.force, progress=progress)
        print((__import__("pathlib").Path(args.out) / "report.txt").read_text())
        print(f"report written to {args.out}/: report.html (open in a browser), report.txt, report.json, "
              "figures (*.png), config.yaml")
        return 0 if report else 1
    from objalign.pipeline.chain import stage_function

    kwargs = {"force": args.force}
    if args.command in ("sample", "crop", "embed"):
        kwargs["progress"] = progress
    if args.command not in ("crop", "embed") and cfg.compute.num_workers > 1:
        raise ObjalignError(f"--num-workers applies to `objalign crop` and `objalign embed`, not `{args.command}`")
    rec = stage_function(args.command)(cfg, args.out, **kwargs)
    if rec.get("partial"):
        sm = rec["summary"]
        print(f"[{args.command}] worker {sm['worker']}: computed {sm['shards_computed']} shard(s); "
              f"{sm['shards_missing']} of {sm['n_shards']} still with other workers (the last to finish "
              "completes the stage)")
        return 0
    print(f"[{args.command}] {'reused' if rec.get('reused') else 'done'}: {rec.get('summary')}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so that it unwinds like Ctrl-C: open stores and worker pools are
    closed on the way out, every finished stage and shard stays, and the exit status is 143 (128 + SIGTERM)."""


def _terminate_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` in this process (not in a worker forked from it, which dies as
    before); returns a function that puts the previous handler back. Nothing changes off the main thread or
    where SIGTERM is ignored (``nohup``-style)."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        return lambda: None
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker: the default action (die)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    restore = _terminate_on_sigterm()
    try:
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "models":
            return _cmd_models(args)
        if args.command == "cache":
            return _cmd_cache(args)
        if args.command == "data":
            return _cmd_data(args)
        if args.command == "sweep":
            from objalign.pipeline.chain import sweep

            print(sweep(args.config, args.out, args.overrides, force=args.force,
                        progress=not args.no_progress and sys.stderr.isatty()))
            return 0
        if args.command == "matrix":
            from objalign.matrix import run_matrix

            res = run_matrix(args.config, args.out, args.overrides, force=args.force,
                             progress=not args.no_progress and sys.stderr.isatty(), jobs=args.jobs)
            print(f"[matrix] {res['n_cells']} cells on {res['n_objects']} objects in {res['seconds']} s "
                  f"({res['blocks_reused']} of {res['blocks']} vision-layer blocks reused); "
                  f"{args.out}/matrix.html, matrix.parquet, best.parquet")
            return 0
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "compare":
            from objalign.report.compare import compare_runs

            print(compare_runs(args.runs, json_out=args.out))
            return 0
        return _cmd_stages(args)
    except ObjalignError as exc:
        print(f"objalign: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what, status = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        print(f"objalign: {what}; finished stages and shards are kept, run again to resume", file=sys.stderr)
        return status
    finally:
        restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

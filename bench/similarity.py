"""Benchmark of the similarity measures for several text target sets sharing one vision feature set (not a test).

``evaluate_targets`` scores every target set (e.g. every text layer) against the same PCA'd held-out vision features
``Z``: CKA (linear, unbiased, RBF), mutual k-NN, CKNNA and SVCCA, a shuffled floor, and each measure calibrated
against image-block permutations (``objalign.evaluation.heldout_similarity``). What those compute from ``Z`` alone (Grams, kernels,
neighbour graphs, subspaces, the permutation engines' factors and group sums, the permutations) is the same for
every target set; with one ``cache`` per ``Z`` it is computed once. Side by side in one run, for ``--targets``
target sets:

- **separate**: ``_similarity(Z, Y_t, groups, cfg)`` per target set, each on its own (what one
  ``evaluate`` per target set does);
- **shared**: the same calls with one cache shared by all of them (what ``evaluate_targets`` does).

Every number of every target set's result is checked to be identical (bit for bit) between the two. Each side is
timed ``--repeat`` times (alternating) and the fastest is kept.

Input: made-up data shaped like the demo's held-out split (268 objects in images of 1-8 objects, 256-d PCA'd vision
features with a weak relation to 30 categories, 384-d text embeddings per target set), or ``--stores VISION TEXT``
(layered stores, e.g. the demo_layers run): one vision layer's held-out-image test features on the PCA fitted to its
training split, against every text layer.

    PYTHONPATH=src python bench/similarity.py [--targets 6] [--perms 100] [--repeat 3]
    PYTHONPATH=src python bench/similarity.py --stores VISION TEXT --vision-layer 11

Last line: ``similarity_shared_vs_separate=<time ratio> per_extra_target_ms=<shared time of each target set after
the first> max_diff=<largest absolute difference>``.

``--against SRC`` (a baseline's source tree, e.g. another checkout's ``src``) runs this benchmark on the baseline's
code and on this tree's, alternating in subprocesses ``--repeat`` times, keeps each side's fastest, and compares every
figure of every target set between the two. Last line: ``similarity_per_extra_target_vs_baseline=<baseline's per
extra target set / this tree's> per_extra_target_ms=<this tree's> baseline_ms=<baseline's> max_diff_vs_baseline=<largest
absolute difference of any figure>``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def made_up(n=268, d=256, c=30, q=384, targets=6, seed=0):
    """``(Z (n, d), {key: Y (n, q)}, groups (n,))``: text targets repeat one row per category."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 9)))
    groups = np.repeat(np.arange(len(sizes)), sizes)[:n]
    lab = rng.integers(0, c, n)
    base = rng.normal(size=(c, q))
    Z = 0.5 * base[lab] @ rng.normal(size=(q, d)) / np.sqrt(q) + rng.normal(size=(n, d)) / np.sqrt(d)
    Ys = {}
    for t in range(targets):  # "layers": the same categories, drifting embeddings
        E = base + 0.5 * t * rng.normal(size=(c, q))
        Ys[f"text{t}"] = (E / np.linalg.norm(E, axis=1, keepdims=True))[lab]
    return Z, Ys, groups


def from_stores(vision: str, text: str, layer: int, cfg):
    """One vision layer's held-out test features (PCA fitted on the training split) and every text layer."""
    from pathlib import Path

    from objalign.embed.store import EmbeddingStore

    try:
        from objalign.evaluation.engine import heldout_image_split
        from objalign.evaluation.folds import pca_dim
        from objalign.maps import PCAMatch
    except ImportError:  # a baseline tree (--against) from before the library/application split
        from objalign.align import PCAMatch
        from objalign.align.shared import pca_dim
        from objalign.align.stage import heldout_image_split

    vm, X = EmbeddingStore(Path(vision)).read()
    tm, T = EmbeddingStore(Path(text)).read()
    X, T = (X[:, None] if X.ndim == 2 else X), (T[:, None] if T.ndim == 2 else T)
    row = {int(c): j for j, c in enumerate(tm["category_id"])}
    groups = np.asarray(vm["image_id"])
    labels = np.asarray([row[int(c)] for c in vm["category_id"]])
    train, test = heldout_image_split(groups, cfg.test_size, cfg.seed)
    Xv = np.asarray(X[:, layer], dtype=np.float64)
    dim = pca_dim(cfg, Xv.shape[1], T.shape[2], len(train))
    Z = PCAMatch(n_components=dim).fit(Xv[train]).transform(Xv[test])
    Ys = {f"text{t}": np.asarray(T[:, t], dtype=np.float64)[labels[test]] for t in range(T.shape[1])}
    return Z, Ys, groups[test]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=6)
    ap.add_argument("--perms", type=int, default=100, help="align.similarity_permutations (demo_layers: 100)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stores", nargs=2, metavar=("VISION", "TEXT"))
    ap.add_argument("--vision-layer", type=int, default=-1)
    ap.add_argument("--against", metavar="SRC", help="a baseline source tree to time and compare side by side")
    ap.add_argument("--dump", help=argparse.SUPPRESS)  # the shared results as JSON (for --against)
    args = ap.parse_args(argv)
    if args.against:
        return against(args)

    import scipy.linalg  # noqa: F401  (loaded before the thread limit, so that it applies to scipy's BLAS too)

    from objalign.config import AlignConfig

    try:
        from objalign.evaluation.heldout_similarity import heldout_similarity as _similarity
        from objalign.maps.threads import single_threaded_blas
    except ImportError:  # a baseline tree (--against) from before the library/application split
        from objalign.align.stage import _similarity
        from objalign.evaluate.stats import single_threaded_blas

    cfg = AlignConfig(similarity_permutations=args.perms)
    if args.stores:
        Z, Ys, groups = from_stores(*args.stores, args.vision_layer, cfg)
    else:
        Z, Ys, groups = made_up(targets=args.targets)
    print(f"Z {Z.shape}, {len(np.unique(groups))} images, {len(Ys)} target sets "
          f"{next(iter(Ys.values())).shape} with {len(np.unique(next(iter(Ys.values())), axis=0))} distinct rows; "
          f"{args.perms} permutations per measure")

    def run(shared: bool):
        cache: dict = {}
        t0 = time.perf_counter()
        out, marks = {}, []
        for key, Y in Ys.items():
            out[key] = _similarity(Z, Y, groups, cfg, cache=cache if shared else None)
            marks.append(time.perf_counter())
        return marks[-1] - t0, marks[-1] - marks[0], out

    best = {"separate": (np.inf, np.inf), "shared": (np.inf, np.inf)}
    results = {}
    with single_threaded_blas():  # as evaluate runs them
        _similarity(Z, next(iter(Ys.values())), groups, cfg)  # imports, first-call overheads
        for _ in range(args.repeat):
            for side in ("separate", "shared"):
                total, rest, results[side] = run(side == "shared")
                best[side] = min(best[side], (total, rest))
    diff = 0.0
    for key in Ys:
        a = json.dumps(results["separate"][key])
        b = json.dumps(results["shared"][key])
        if a != b:  # not bit-identical: report how far apart
            diff = max(diff, max_abs_diff(results["separate"][key], results["shared"][key]))
    extra = max(len(Ys) - 1, 1)
    for side, (total, rest) in best.items():
        print(f"{side:<9} {len(Ys)} target sets {total:.3f} s  (first {total - rest:.3f} s, each further "
              f"{rest / extra * 1e3:.1f} ms)")
    sep, sh = best["separate"][0], best["shared"]
    print(f"similarity_shared_vs_separate={sep / sh[0]:.2f} per_extra_target_ms={sh[1] / extra * 1e3:.1f} "
          f"max_diff={diff:.3g}")
    if args.dump:
        with open(args.dump, "w") as f:
            json.dump(results["shared"], f)


def against(args):
    """This benchmark on ``args.against``'s code and on this tree's, alternating; each side's fastest; the largest
    difference between their figures."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1] / "src")
    common = ["--targets", str(args.targets), "--perms", str(args.perms), "--vision-layer", str(args.vision_layer),
              "--repeat", "1"] + (["--stores", *args.stores] if args.stores else [])
    best = {"baseline": np.inf, "this": np.inf}
    dumps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for side, src in (("baseline", args.against), ("this", here)):
                dumps[side] = os.path.join(tmp, f"{side}.json")
                env = {**os.environ, "PYTHONPATH": src}
                run = subprocess.run([sys.executable, __file__, *common, "--dump", dumps[side]], env=env,
                                     capture_output=True, text=True, check=True)
                last = run.stdout.strip().splitlines()[-1]
                ms = float(last.split("per_extra_target_ms=")[1].split()[0])
                print(f"{side:<8} ({src}): {last}")
                best[side] = min(best[side], ms)
        results = {}
        for side, path in dumps.items():
            with open(path) as f:
                results[side] = json.load(f)
    diff = max(max_abs_diff(results["baseline"][key], results["this"][key]) for key in results["this"])
    b, t = best["baseline"], best["this"]
    print(f"similarity_per_extra_target_vs_baseline={b / t:.2f} per_extra_target_ms={t:.1f} baseline_ms={b:.1f} "
          f"max_diff_vs_baseline={diff:.3g}")


def max_abs_diff(a, b) -> float:
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return float("inf")
        return max([max_abs_diff(a[k], b[k]) for k in a] + [0.0])
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(abs(a - b))
    return 0.0 if a == b else float("inf")


if __name__ == "__main__":
    main()

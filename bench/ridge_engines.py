"""Time RidgeCV's two exact cross-validation engines against each other, to place the switch between them.

Per fold, :func:`objalign.maps._ridge_stats._cv_r2_scores_eig` does one (p, p) eigendecomposition that serves
every alpha; :func:`~objalign.maps._ridge_stats._cv_r2_scores_chol` does one Cholesky fit per alpha. Both
get the same fold moments (from a real ``RidgeCV.fit`` on the seed-sized problem of ``bench/align.py``),
on one core. Prints, per alpha-grid length, both times, which one the cost model
(``_use_cholesky``) picks, and whether that pick was the faster one; for factorised targets (80 distinct
rows, r=80) and for targets with all rows distinct (r=512).

Usage::

    python bench/ridge_engines.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _best(fn, reps=5):
    fn()
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    import objalign.maps._ridge_stats as rs
    from align import seed_problem
    from objalign.maps import RidgeCV

    X, Y, groups = seed_problem()
    splits = list(GroupKFold(5).split(X, Y, groups))
    noise = np.random.default_rng(1).standard_normal(Y.shape) * 1e-3
    captured = {}
    original = rs._cv_r2_scores

    def grab(*args):
        captured["args"] = args
        return original(*args)

    rs._cv_r2_scores = grab
    ok = True
    with threadpool_limits(limits=1, user_api="blas"):
        for label, targets in (("factorised targets (r=80)", Y), ("distinct targets (r=512)", Y + noise)):
            RidgeCV(alphas=[1.0], cv=splits).fit(X, targets)
            folds, _, fit_intercept, Z, tots, absmax = captured["args"]
            p, r = folds[0][0].E.shape
            print(f"{label}: p={p} r={r} folds={len(folds)}")
            for n_alphas in (1, 3, 5, 7, 10, 14, 20):
                alphas = np.logspace(-3, 3, n_alphas)
                args = (folds, alphas, fit_intercept, Z, tots, absmax)
                t_eig = _best(lambda: rs._cv_r2_scores_eig(*args))
                t_chol = _best(lambda: rs._cv_r2_scores_chol(*args))
                diff = float(np.abs(rs._cv_r2_scores_eig(*args) - rs._cv_r2_scores_chol(*args)).max())
                pick = "chol" if rs._use_cholesky(p, r, n_alphas) else "eig"
                faster = "chol" if t_chol < t_eig else "eig"
                lost = max(t_eig, t_chol) / min(t_eig, t_chol) if pick != faster else 1.0
                ok &= lost < 1.3
                print(f"  alphas={n_alphas:2d}: eig {t_eig * 1e3:6.2f} ms  chol {t_chol * 1e3:6.2f} ms  "
                      f"max|diff|={diff:.1e}  model picks {pick} (faster: {faster}, x{lost:.2f} lost)")
    rs._cv_r2_scores = original
    print(f"engine_choice_within_30pct={ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests for objalign.measures.calibrate: permutation engines against recomputation, and the calibration definitions."""

import math

import numpy as np
import pytest
from scipy import stats

from objalign.errors import ObjalignError
from objalign.measures import bh_adjust, calibrated
from objalign.measures import similarity as sim
from objalign.measures.calibrate import MEASURES, calibrate_measures, calibration_summary, permutation_engine
from objalign.stats.permutation import group_permutations

OPTIONS = {"mutual_knn": {"k": 5}, "cknna": {"k": 5}, "svcca": {"dim": 4}}
DIRECT = {
    "cka_linear": lambda a, b: sim.cka(a, b),
    "cka_linear_unbiased": lambda a, b: sim.cka(a, b, unbiased=True),
    "cka_rbf": lambda a, b: sim.cka(a, b, kernel="rbf"),
    "mutual_knn": lambda a, b: sim.mutual_knn(a, b, k=5),
    "cknna": lambda a, b: sim.cknna(a, b, k=5),
    "svcca": lambda a, b: sim.svcca(a, b, dim=4),
}


def _data(kind: str, n: int = 70, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12 if kind != "wide" else 150))
    if kind == "dense":  # every row of Y distinct, related to X
        return X, X[:, :8] + rng.normal(size=(n, 8))
    lab = rng.integers(0, 9, n)  # text targets repeat per category
    return X, rng.normal(size=(9, 10))[lab] + 0 * X[:, :1]


def test_every_registered_measure_is_checked():
    assert set(MEASURES) == set(DIRECT)


@pytest.mark.parametrize("kind", ["coded", "dense", "wide"])
@pytest.mark.parametrize("name", sorted(DIRECT))
def test_permuted_scores_equal_recomputation(name, kind):
    X, Y = _data(kind)
    engine = permutation_engine(name, X, Y, **OPTIONS.get(name, {}))
    P = np.vstack([np.arange(len(X)), group_permutations(len(X), 4, seed=1)])
    fast = engine.scores(P)
    slow = [DIRECT[name](X, Y[pi]) for pi in P]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    assert engine.score() == pytest.approx(DIRECT[name](X, Y), abs=1e-12)


def test_summary_follows_the_definitions():
    null = np.array([0.1, 0.3, 0.2, 0.5, 0.05, 0.25, 0.15, 0.45, 0.35])  # K = 9
    r = calibration_summary(0.4, null, alpha=0.2)
    pooled = np.sort(np.append(null, 0.4))
    assert r["threshold"] == pooled[math.ceil(0.8 * 10) - 1] == 0.4  # the 8th order statistic
    assert r["pvalue"] == (1 + 2) / 10
    assert r["calibrated"] == 0.0  # s does not exceed tau
    r = calibration_summary(0.9, null, alpha=0.2)
    assert r["threshold"] == 0.45 and r["pvalue"] == 0.1
    assert r["calibrated"] == pytest.approx((0.9 - 0.45) / (1 - 0.45))


def test_calibrated_uses_image_block_permutations():
    X, Y = _data("coded", n=60)
    groups = np.repeat(np.arange(20), 3)
    r = calibrated("cka_linear", X, Y, groups=groups, n_permutations=50, seed=3)
    P = group_permutations(groups, 50, seed=3)
    np.testing.assert_allclose(r["null"], [sim.cka(X, Y[p]) for p in P], atol=1e-12)
    assert r["scheme"] == "image-blocks" and r["measure"] == "cka_linear" and r["n_permutations"] == 50
    assert set(r) >= {"score", "threshold", "pvalue", "calibrated", "null"}


def test_callable_measure_and_options():
    X, Y = _data("dense", n=40)
    r = calibrated(lambda a, b, k: sim.mutual_knn(a, b, k=k), X, Y, n_permutations=30, k=4)
    ref = calibrated("mutual_knn", X, Y, n_permutations=30, k=4)
    np.testing.assert_allclose(r["null"], ref["null"], atol=1e-14)
    assert r["pvalue"] == ref["pvalue"]


def test_independent_gaussians_mutual_knn_chance_level():
    n, k = 100, 5
    draws = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        draws.append(sim.mutual_knn(rng.normal(size=(n, 20)), rng.normal(size=(n, 20)), k=k))
    assert np.mean(draws) == pytest.approx(k / (n - 1), rel=0.1)
    rng = np.random.default_rng(99)
    r = calibrated("mutual_knn", rng.normal(size=(n, 20)), rng.normal(size=(n, 20)), n_permutations=2000, k=k)
    assert r["null_mean"] == pytest.approx(k / (n - 1), rel=0.03)  # exact in expectation over permutations


@pytest.mark.parametrize("name", ["mutual_knn", "cka_linear"])
def test_false_positive_rate_at_most_alpha_under_the_null(name):
    alpha, draws = 0.1, 300
    rejected = positive = 0
    for seed in range(draws):
        rng = np.random.default_rng(1000 + seed)
        r = calibrated(name, rng.normal(size=(30, 40)), rng.normal(size=(30, 8)), n_permutations=49, alpha=alpha,
                       seed=seed, **({"k": 3} if name == "mutual_knn" else {}))
        rejected += r["pvalue"] <= alpha
        positive += r["calibrated"] > 0
        assert r["calibrated"] == 0 or r["pvalue"] <= alpha  # a positive calibrated score is significant
    se = math.sqrt(alpha * (1 - alpha) / draws)
    assert rejected / draws <= alpha + 2 * se
    assert positive <= rejected


def test_calibrated_linear_cka_tracks_unbiased_cka():
    n, d = 120, 60
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(n, 5))
    cal, unb, raw = [], [], []
    for strength in np.linspace(0, 1.5, 7):
        X = np.hstack([strength * Z, rng.normal(size=(n, d))])
        Y = np.hstack([strength * Z @ rng.normal(size=(5, 5)), rng.normal(size=(n, d))])
        r = calibrated("cka_linear", X, Y, n_permutations=199, seed=1)
        cal.append(r["calibrated"])
        unb.append(sim.cka(X, Y, unbiased=True))
        raw.append(r["score"])
    assert raw[0] > 0.3  # biased CKA of unrelated 60-d data on 120 samples is far from 0 ...
    assert cal[0] < 0.01 and abs(unb[0]) < 0.05  # ... calibrated and unbiased CKA both say "(almost) nothing"
    assert stats.spearmanr(cal, unb).statistic > 0.95
    assert cal[-1] > 0.2 and cal[-1] < raw[-1]


def test_bh_matches_scipy():
    p = np.random.default_rng(0).uniform(size=40) ** 2
    np.testing.assert_allclose(bh_adjust(p), stats.false_discovery_control(p, method="bh"), atol=1e-15)


def test_calibrate_measures_adjusts_across_measures_and_records_errors():
    X, Y = _data("coded", n=50)
    spec = {"cka_linear": ("cka_linear", {}), "mutual_knn": ("mutual_knn", {"k": 5}),
            "svcca": ("svcca", {"dim": 40})}  # dim above the rank: recorded, not raised
    out = calibrate_measures(spec, X, Y, n_permutations=40)
    assert "dim=40" in out["svcca"]["error"]
    ps = [out[k]["pvalue"] for k in ("cka_linear", "mutual_knn")]
    np.testing.assert_allclose([out[k]["pvalue_bh"] for k in ("cka_linear", "mutual_knn")], bh_adjust(ps))
    assert "null" not in out["cka_linear"]


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, float("nan"), "x"])
def test_alpha_outside_unit_interval(alpha):
    X, Y = _data("dense", n=20)
    with pytest.raises(ObjalignError, match="alpha"):
        calibrated("cka_linear", X, Y, alpha=alpha)


def test_bad_inputs_one_line_each():
    X, Y = _data("dense", n=20)
    with pytest.raises(ObjalignError, match="did you mean 'mutual_knn'"):
        calibrated("mutual_kn", X, Y)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ObjalignError, match="NaN or infinite"):
        calibrated("cka_linear", bad, Y)
    with pytest.raises(ObjalignError, match="groups has 5 labels for 20"):
        calibrated("cka_linear", X, Y, groups=np.arange(5))
    with pytest.raises(ObjalignError, match="n_permutations"):
        calibrated("cka_linear", X, Y, n_permutations=0)
    with pytest.raises(ObjalignError, match="bad options"):
        calibrated("cka_linear", X, Y, k=3)

"""A cache shared by similarity measures and permutation engines on one X: values bit-identical to no cache.

``evaluate_targets`` scores several text target sets against the same held-out vision features with one cache
(:mod:`objalign.measures.similarity`, :mod:`objalign.measures.calibrate`); a separate run has none. Every number
must be exactly the same either way, for every target set, in any order, and a cache must never hand one X's
quantities to another X.
"""

import json

import numpy as np
import pytest

from objalign.errors import ObjalignError
from objalign.measures import _grouping as cal
from objalign.measures import _sides as sides
from objalign.measures import similarity as sim
from objalign.measures.calibrate import calibrate_measures, calibrated
from objalign.stats.labels import unique_rows

MEASURES = {
    "cka_linear": lambda X, Y, c: sim.cka(X, Y, cache=c),
    "cka_linear_unbiased": lambda X, Y, c: sim.cka(X, Y, unbiased=True, cache=c),
    "cka_rbf": lambda X, Y, c: sim.cka(X, Y, kernel="rbf", cache=c),
    "cka_rbf_unbiased": lambda X, Y, c: sim.cka(X, Y, kernel="rbf", unbiased=True, sigma=0.5, cache=c),
    "mutual_knn": lambda X, Y, c: sim.mutual_knn(X, Y, k=5, cache=c),
    "mutual_knn_index": lambda X, Y, c: sim.mutual_knn(X, Y, k=5, ties="index", cache=c),
    "cknna": lambda X, Y, c: sim.cknna(X, Y, k=5, cache=c),
    "svcca": lambda X, Y, c: sim.svcca(X, Y, dim=4, cache=c),
}
SPEC = {"cka_linear": ("cka_linear", {}), "cka_linear_unbiased": ("cka_linear_unbiased", {}),
        "cka_rbf": ("cka_rbf", {}), "mutual_knn": ("mutual_knn", {"k": 5}), "cknna": ("cknna", {"k": 5}),
        "svcca": ("svcca", {"dim": 4})}


def _problem(n=60, d=12, c=7, q=10, seed=0):
    """X, groups and three target sets: two repeat per category (different category orders once sorted as
    numbers), one has distinct rows."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, c, n)
    X = rng.normal(size=(n, d)) + rng.normal(size=(c, d))[lab]
    groups = np.repeat(np.arange(n // 3 + 1), 3)[:n]
    E1, E2 = rng.normal(size=(c, q)), rng.normal(size=(c, q + 3))
    dense = X[:, :q] @ rng.normal(size=(q, q)) + rng.normal(size=(n, q))
    Ys = {"coded": E1[lab], "coded_other": E2[lab], "dense": dense}
    return X, groups, Ys


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_measures_with_a_shared_cache_equal_no_cache_exactly(name):
    X, _, Ys = _problem()
    f = MEASURES[name]
    cache: dict = {}
    for key in ["coded", "coded_other", "dense", "coded"]:  # two different Y's (and back) share one X's cache
        assert f(X, Ys[key], cache) == f(X, Ys[key], None), key
    assert "X" in cache and cache["X"][1]  # the X side was kept


def test_linear_cka_feature_space_path_with_cache():
    rng = np.random.default_rng(4)
    X, cache = rng.normal(size=(80, 3)), {}
    for Y in (rng.normal(size=(80, 2)), rng.normal(size=(80, 4))):  # few features: the feature-space formula
        assert sim.cka(X, Y, cache=cache) == sim.cka(X, Y)


def test_x_side_is_computed_once_per_cache(monkeypatch):
    X, _, Ys = _problem()
    calls, medians = [], []
    real, real_median = sides.rbf_gram, sides.weighted_median
    monkeypatch.setattr(sides, "rbf_gram", lambda A, *a, **k: calls.append(A.shape) or real(A, *a, **k))
    monkeypatch.setattr(sides, "weighted_median", lambda v, w: medians.append(int(w.sum())) or real_median(v, w))
    cache: dict = {}
    for key in ("coded", "coded_other", "dense", "coded"):
        sim.cka(X, Ys[key], kernel="rbf", cache=cache)
        sim.cka(X, Ys[key][::-1], kernel="rbf", cache=cache)  # the same rows in another order
    # X once, the dense Y once per order; a coded Y's kernel once from its category rows for both orders (the
    # second "coded" recomputes it: "coded_other" took the cache's rows slot in between)
    assert calls == [X.shape, (60, 10), (60, 10)] and medians == [60 * 59 // 2] * 3


def test_a_different_or_modified_x_is_never_served_from_the_cache():
    X, _, Ys = _problem()
    Y = Ys["coded"]
    cache: dict = {}
    for name, f in MEASURES.items():
        f(X, Y, cache)
    X2 = X.copy()
    X2[0, 0] += 1.0
    for name, f in MEASURES.items():
        assert f(X2, Y, cache) == f(X2, Y, None), name
    X2[3] *= -1  # modified in place after being cached
    for name, f in MEASURES.items():
        assert f(X2, Y, cache) == f(X2, Y, None), name
    # the check is on the bits: -0.0 is not 0.0, a view equals its copy, shapes and dtypes count
    zero = np.zeros((3, 2))
    assert not sides.identical(zero, -zero) and sides.identical(X[:, ::2], X[:, ::2].copy())
    assert not sides.identical(X, X.T.copy().T[:, :-1]) and not sides.identical(X, X.astype(np.float32))


def test_errors_of_the_x_side_are_raised_again_with_a_cache():
    X, _, Ys = _problem()
    X = X.copy()
    X[4] = 0.0  # cosine similarity undefined for this row
    cache: dict = {}
    for key in ("coded", "dense"):
        with pytest.raises(ObjalignError, match="all-zero rows"):
            sim.mutual_knn(X, Ys[key], k=5, cache=cache)
        with pytest.raises(ObjalignError, match="all-zero rows"):
            sim.cknna(X, Ys[key], k=5, cache=cache)
    low = np.repeat(np.random.default_rng(0).normal(size=(60, 1)), 5, axis=1)  # rank 1
    for key in ("coded", "dense"):
        with pytest.raises(ObjalignError, match="rank 1"):
            sim.svcca(low, Ys[key], dim=3, cache=cache)


def test_calibration_with_a_shared_cache_equals_no_cache_exactly(monkeypatch):
    X, groups, Ys = _problem()
    cache: dict = {}
    alone = {}
    with monkeypatch.context() as m:
        m.setattr(cal, "_GROUP_SUMS_BYTES", 0)  # group sums recomputed per chunk of permutations, as without a cache
        for key in Ys:
            for name, (measure, options) in SPEC.items():  # each measure on its own, no cache at all
                r = calibrated(measure, X, Ys[key], groups, 60, 0.1, 3, **options)
                r.pop("null")
                alone[key, name] = r
    for key in ["coded", "coded_other", "dense", "coded"]:
        shared = calibrate_measures(SPEC, X, Ys[key], groups, 60, 0.1, 3, cache=cache)
        for name in SPEC:
            shared[name].pop("pvalue_bh")
            assert _same(shared[name], alone[key, name]), (key, name)
    # the permutation engines reused X's sums by code (pair sums of F F^T and of Kc, the unbiased estimator's
    # diagonal and row-sum terms, rows of its SVCCA subspace, neighbour-graph code pairs) for the second coded target
    # set: one per permutation set (P, identity)
    memo = cache["X"][1]
    sums = sorted(str(k[2]) for k in memo if isinstance(k, tuple) and k[0] == "group_sums")
    assert sums == ["None"] * 4 + ["dense", "dense", "factor", "factor"]
    # mutual k-NN's weights, CKNNA's three weights and its index, by code pair, for each permutation set
    assert sum(1 for k in memo if isinstance(k, tuple) and k[0] in ("pair_index", "pair_weights")) == 5 * 2


def test_calibration_nulls_equal_with_cache_and_without_group_sums(monkeypatch):
    X, groups, Ys = _problem(seed=2)
    ref = {key: calibrated("cka_rbf", X, Y, groups, 40, seed=1)["null"] for key, Y in Ys.items()}
    monkeypatch.setattr(cal, "_GROUP_SUMS_BYTES", 0)  # too big to keep: recomputed in chunks
    cache: dict = {}
    for key, Y in Ys.items():
        np.testing.assert_array_equal(calibrated("cka_rbf", X, Y, groups, 40, seed=1, cache=cache)["null"], ref[key])


def test_a_generator_seed_draws_new_permutations_with_a_cache():
    X, groups, Ys = _problem()
    cache: dict = {}
    rng = np.random.default_rng(5)
    a = calibrated("cka_linear", X, Ys["coded"], groups, 30, seed=rng, cache=cache)["null"]
    b = calibrated("cka_linear", X, Ys["coded"], groups, 30, seed=rng, cache=cache)["null"]
    again = np.random.default_rng(5)
    np.testing.assert_array_equal(a, calibrated("cka_linear", X, Ys["coded"], groups, 30, seed=again)["null"])
    np.testing.assert_array_equal(b, calibrated("cka_linear", X, Ys["coded"], groups, 30, seed=again)["null"])
    assert not np.array_equal(a, b)


def test_unique_rows_is_np_unique():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, d, u = int(rng.integers(1, 40)), int(rng.integers(1, 5)), int(rng.integers(1, 8))
        base = rng.integers(-2, 3, size=(u, d)) * rng.choice([0.5, 1.0], size=(u, d))
        A = base[rng.integers(0, u, n)]
        A[rng.random(A.shape) < 0.2] *= -1  # -0.0 next to 0.0: equal numbers, one row
        for M in (A, A.astype(np.int64), A.astype(np.float32)):
            _, first, codes = np.unique(M, axis=0, return_index=True, return_inverse=True)
            f, c = unique_rows(M)
            np.testing.assert_array_equal(f, first)
            np.testing.assert_array_equal(c, codes.ravel())


def test_evaluate_targets_similarity_is_bit_identical_to_separate_runs():
    from objalign.config import AlignConfig
    from objalign.evaluation.engine import evaluate, evaluate_targets

    rng = np.random.default_rng(0)
    c, d = 8, 20
    groups = np.repeat(np.arange(40), 3)
    lab = rng.integers(0, c, len(groups))
    X = rng.normal(size=(c, d))[lab] + 0.7 * rng.normal(size=(len(lab), d))
    targets = {"a": rng.normal(size=(c, 24)), "b": rng.normal(size=(c, 20)),  # one PCA dimension (16) ...
               "narrow": rng.normal(size=(c, 6))}  # ... and its own (6)
    cfg = AlignConfig(methods=("ridge",), baselines=(), protocols=("heldout_images",), alphas=(0.1, 1.0, 10.0),
                      cv_folds=3, n_permutations=0, n_bootstrap=0, common_dim=16, similarity_k=5, svcca_dim=4,
                      similarity_permutations=30, match_methods=())
    shared = evaluate_targets(X, groups, lab, targets, cfg)
    for key, T in targets.items():
        alone = evaluate(X, T[lab], groups, lab, T, cfg)["similarity"]
        assert alone["calibrated"] and alone["values"]["cknna"] is not None
        assert _same(shared[key]["similarity"], alone), key


def test_calibration_is_the_same_when_the_cache_is_full(monkeypatch):
    """Sums by code that no longer fit the cache's budget are computed again, with the same values: a target set's
    nulls do not depend on how much the target sets before it left in the cache."""
    X, groups, Ys = _problem(seed=3)
    alone = {name: calibrated(measure, X, Ys["coded_other"], groups, 50, seed=4, **options)["null"]
             for name, (measure, options) in SPEC.items()}
    for budget in (0, 40_000):  # nothing kept / some kept, then full
        monkeypatch.setattr(cal, "_KEPT_BYTES", budget)
        cache: dict = {}
        for key in ("coded", "coded_other"):
            got = {name: calibrated(measure, X, Ys[key], groups, 50, seed=4, cache=cache, **options)["null"]
                   for name, (measure, options) in SPEC.items()}
        for name in SPEC:
            np.testing.assert_array_equal(got[name], alone[name], err_msg=f"{name} {budget}")
        assert cache["X"][1].get("kept_bytes", 0) <= budget

"""The per-target-set figures of a row (R², per-instance arrays, bootstrap intervals) through their shared paths:
the same numbers as the plain formulas, whatever other target sets share the call."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import r2_score

import objalign.stats.intervals as intervals
from objalign.evaluation.engine import evaluate, evaluate_targets
from objalign.config import AlignConfig
from objalign.errors import ObjalignError
from objalign.stats.intervals import bootstrap_figures, resample_counts
from objalign.stats.metrics import per_instance, r2_scores, r2_uniform, r2_variance_weighted


def _sets(seed=0, n_img=60, c=8, q=10, n_sets=3):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_img), rng.integers(1, 5, n_img))
    lab = rng.integers(0, c, len(groups))
    Es = [rng.normal(size=(c, q + 2 * s)) for s in range(n_sets)]
    Es[-1][:, 0] = 0.25  # a text dimension constant over the categories (left out of the uniform R²)
    preds = [E[lab] + 0.6 * rng.normal(size=(len(lab), E.shape[1])) for E in Es]
    return groups, lab, Es, preds


def _explicit_median(values, w):
    return np.array([np.median(np.repeat(values, row)) for row in w])


@pytest.mark.parametrize("chunk", [None, 40])
def test_block_median_is_the_median_of_each_resample(monkeypatch, chunk):
    if chunk:  # the sparse block-membership path
        monkeypatch.setattr(intervals, "_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 70))
        values = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)  # ties, and none
        codes = rng.integers(0, int(rng.integers(1, n + 1)), n)
        counts = rng.integers(0, 3, (5, codes.max() + 1))
        counts[:, codes[0]] += 1  # no empty resample
        want = _explicit_median(values, counts[:, codes])
        np.testing.assert_array_equal(intervals.weighted_median(values, counts, codes), want)
        np.testing.assert_array_equal(intervals.weighted_median(values, counts[:, codes]), want)


def test_r2_scores_equal_the_plain_figures_and_scikit_learn():
    groups, lab, Es, preds = _sets()
    for E, P in zip(Es, preds):
        T = E[lab]
        plain = r2_scores(T, P)
        assert plain == {"r2": r2_uniform(T, P), "r2_variance_weighted": r2_variance_weighted(T, P)}
        live = np.ptp(T, axis=0) > 0
        assert plain["r2"] == pytest.approx(r2_score(T[:, live], P[:, live]), abs=1e-12)
        assert plain["r2_variance_weighted"] == pytest.approx(
            r2_score(T, P, multioutput="variance_weighted"), abs=1e-12)
        fast = r2_scores(T, P, categories=(lab, E))  # total sums of squares from the (c, q) categories
        for k in plain:
            assert abs(fast[k] - plain[k]) <= 1e-12


def test_per_instance_residual_is_the_euclidean_norm():
    groups, lab, Es, preds = _sets()
    E, P = Es[0], preds[0]
    inst = per_instance(P, E[lab], lab, E)
    np.testing.assert_array_equal(inst["residual_l2"], np.linalg.norm(P - E[lab], axis=1))
    unit = P / np.linalg.norm(P, axis=1, keepdims=True)
    np.testing.assert_allclose(inst["cosine"], np.sum(unit * E[lab] / np.linalg.norm(E[lab], axis=1)[:, None], 1),
                               rtol=0, atol=1e-12)


def test_bootstrap_cache_gives_each_set_its_own_intervals():
    groups, lab, Es, preds = _sets()
    insts = [per_instance(P, E[lab], lab, E) for E, P in zip(Es, preds)]
    alone = [bootstrap_figures(P, E[lab], inst, groups, 60, 0.9, 5, categories=(lab, E))
             for E, P, inst in zip(Es, preds, insts)]
    cache: dict = {}
    for order in ([0, 1, 2], [2, 0, 1, 2]):  # sets interleaved, as the methods x sets loop calls them
        for s in order:
            shared = bootstrap_figures(preds[s], Es[s][lab], insts[s], groups, 60, 0.9, 5,
                                       categories=(lab, Es[s]), cache=cache)
            assert shared == alone[s]  # bit for bit
    assert cache["bootstrap"].complete
    # a call on other test objects or another seed is not served the held draws
    other = np.flatnonzero(groups % 3 > 0)
    got = bootstrap_figures(preds[0][other], Es[0][lab[other]], {k: v[other] for k, v in insts[0].items()},
                            groups[other], 60, 0.9, 5, categories=(lab[other], Es[0]), cache=cache)
    assert got == bootstrap_figures(preds[0][other], Es[0][lab[other]], {k: v[other] for k, v in insts[0].items()},
                                    groups[other], 60, 0.9, 5, categories=(lab[other], Es[0]))
    assert bootstrap_figures(preds[0], Es[0][lab], insts[0], groups, 60, 0.9, 6, categories=(lab, Es[0]),
                             cache=cache) == bootstrap_figures(preds[0], Es[0][lab], insts[0], groups, 60, 0.9, 6,
                                                               categories=(lab, Es[0]))


def test_bootstrap_intervals_are_quantiles_of_explicit_resamples():
    groups, lab, Es, preds = _sets(n_sets=1)
    E, P = Es[0], preds[0]
    inst = per_instance(P, E[lab], lab, E)
    ci = bootstrap_figures(P, E[lab], inst, groups, 80, 0.8, 2, categories=(lab, E), cache={})
    _, codes = np.unique(groups, return_inverse=True)
    counts = resample_counts(codes.max() + 1, 80, seed=2)[:, codes]
    med = [np.median(np.repeat(inst["residual_l2"], w)) for w in counts]
    r2 = [r2_uniform(np.repeat(E[lab], w, 0), np.repeat(P, w, 0)) for w in counts]
    np.testing.assert_allclose(ci["residual_median"], np.quantile(med, [0.1, 0.9]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ci["r2"], np.quantile(r2, [0.1, 0.9]), rtol=0, atol=1e-12)


def test_a_sets_figures_do_not_depend_on_its_companions():
    groups, lab, Es, _ = _sets(n_img=45, n_sets=3)
    rng = np.random.default_rng(2)
    X = Es[0][lab] @ rng.normal(size=(Es[0].shape[1], 14)) + 0.5 * rng.normal(size=(len(lab), 14))
    cfg = AlignConfig(methods=("ridge",), baselines=("mean",), alphas=(0.1, 10.0), cv_folds=3, category_folds=3,
                      n_permutations=0, n_bootstrap=40, common_dim=8, similarity_k=5, svcca_dim=3,
                      similarity_permutations=0, match_methods=())
    targets = {f"t{j}": E for j, E in enumerate(Es)}
    shared = evaluate_targets(X, groups, lab, targets, cfg)
    reversed_ = evaluate_targets(X, groups, lab, dict(reversed(list(targets.items()))), cfg)
    for key, E in targets.items():
        alone = evaluate(X, E[lab], groups, lab, E, replace(cfg))
        for res in (shared[key], reversed_[key]):
            for a, b in zip(res["rows"], alone["rows"]):
                assert {k: v for k, v in a.items() if k != "fit_seconds"} == \
                    {k: v for k, v in b.items() if k != "fit_seconds"}
            for k, v in alone["per_instance"].items():
                np.testing.assert_array_equal(res["per_instance"][k], v)
        assert {r["split"] for r in alone["rows"]} == {"heldout_images", "heldout_categories"}
        assert all(r["ci"] for r in alone["rows"])


def test_kendall_tau_a_from_scipy_equals_the_sign_table():
    from objalign.measures.rsa import _kendall_sign_table, kendall_tau_a

    rng = np.random.default_rng(3)
    for trial in range(60):
        m = int(rng.integers(64, 400))
        a = rng.integers(0, 6, m).astype(float) if trial % 2 else rng.normal(size=m)  # with ties, and without
        b = rng.integers(0, 9, m).astype(float) if trial % 3 else a + rng.normal(size=m)
        assert kendall_tau_a(a, b) == _kendall_sign_table(a, b)  # bit for bit: an exact pair count
    assert kendall_tau_a(np.ones(100), rng.normal(size=100)) == 0.0


def test_per_instance_of_the_category_rows_equals_the_explicit_targets():
    groups, lab, Es, preds = _sets()
    for E, P in zip(Es, preds):
        for cand in (None, np.unique(lab)[:5]):
            keep = np.ones(len(lab), bool) if cand is None else np.isin(lab, cand)
            got = per_instance(P[keep], None, lab[keep], E, cand)
            want = per_instance(P[keep], E[lab[keep]], lab[keep], E, cand)
            assert got.keys() == want.keys()
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])  # bit for bit
    with pytest.raises(ObjalignError, match="outside"):
        per_instance(preds[0][:2], None, np.array([0, 99]), Es[0])

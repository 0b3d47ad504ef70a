"""Metrics of a result row and their bootstrap intervals, against scikit-learn and brute force."""

import numpy as np
import pytest
from sklearn.metrics import r2_score

from objalign.errors import ObjalignError
from objalign.stats.intervals import bootstrap_figures, figures_for_weights, resample_counts
from objalign.stats.metrics import FIGURES, per_category, per_instance, summarize


def _data(n=120, q=12, c=7, seed=0, noise=0.8):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(c, q))
    lab = rng.integers(0, c, n)
    T = E[lab]
    P = T + noise * rng.normal(size=(n, q)) + 0.2
    groups = rng.integers(0, n // 3, n)
    return P, T, lab, E, groups


def _brute_rank(p, E, label):
    sims = [p @ e / (np.linalg.norm(p) * np.linalg.norm(e)) for e in E]
    return 1 + sum(s > sims[label] for s in sims)


def test_per_instance_against_brute_force():
    P, T, lab, E, _ = _data()
    inst = per_instance(P, T, lab, E)
    for i in range(len(P)):
        assert inst["residual_l2"][i] == pytest.approx(np.sqrt(np.sum((P[i] - T[i]) ** 2)))
        assert inst["cosine"][i] == pytest.approx(P[i] @ T[i] / np.linalg.norm(P[i]) / np.linalg.norm(T[i]))
        assert inst["rank"][i] == _brute_rank(P[i], E, lab[i])


def test_unseen_candidates_rank_within_the_subset():
    P, T, lab, E, _ = _data()
    keep = lab < 3
    P, T, lab = P[keep], T[keep], lab[keep]
    cand = np.array([2, 0, 1])  # any order
    inst = per_instance(P, T, lab, E, candidates=cand)
    for i in range(len(P)):
        assert inst["rank_unseen"][i] == _brute_rank(P[i], E[:3], lab[i])
        assert inst["rank_unseen"][i] <= inst["rank"][i]


def test_ties_count_against_the_truth():
    E = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # categories 0 and 1 share an embedding
    P = np.array([[1.0, 0.1]])
    inst = per_instance(P, E[[0]], np.array([0]), E)
    assert inst["rank"][0] == 1  # nothing strictly higher
    P2 = np.array([[0.2, 1.0]])
    assert per_instance(P2, E[[0]], np.array([0]), E)["rank"][0] == 2


def test_summarize_matches_sklearn_and_numpy():
    P, T, lab, E, _ = _data()
    agg, inst = summarize(P, T, lab, E)
    assert agg["r2"] == pytest.approx(r2_score(T, P))
    assert agg["r2_variance_weighted"] == pytest.approx(r2_score(T, P, multioutput="variance_weighted"))
    assert agg["residual_median"] == pytest.approx(np.median(np.linalg.norm(P - T, axis=1)))
    assert agg["top5"] == pytest.approx(np.mean(inst["rank"] <= 5))
    assert agg["mean_rank"] == pytest.approx(inst["rank"].mean())
    assert set(FIGURES) <= set(agg)


def test_per_category_breakdown():
    P, T, lab, E, _ = _data()
    inst = per_instance(P, T, lab, E)
    names = [f"c{j}" for j in range(len(E))]
    rows = per_category(inst, lab, names, np.arange(10, 10 + len(E)))
    assert sum(r["n"] for r in rows) == len(P)
    for r in rows:
        m = lab == (r["category_id"] - 10)
        assert r["category"] == f"c{r['category_id'] - 10}"
        assert r["top1"] == pytest.approx(np.mean(inst["rank"][m] == 1))
        assert r["cosine_mean"] == pytest.approx(inst["cosine"][m].mean())


@pytest.mark.parametrize("bad, match", [
    (dict(label=np.array([0, 9])), "outside"),
    (dict(pred=np.zeros((2, 4))), "shape"),
    (dict(cand=np.array([1])), "unseen candidates"),
])
def test_bad_inputs_raise_one_line(bad, match):
    E = np.eye(3)
    pred, true = np.ones((2, 3)), E[[0, 1]]
    with pytest.raises(ObjalignError, match=match) as exc:
        per_instance(bad.get("pred", pred), true, bad.get("label", np.array([0, 1])), E, bad.get("cand"))
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("unseen", [False, True])
def test_weighted_figures_equal_explicit_resamples(unseen):
    P, T, lab, E, groups = _data(n=90)
    cand = np.arange(len(E)) if unseen else None
    inst = per_instance(P, T, lab, E, cand)
    _, codes = np.unique(groups, return_inverse=True)
    counts = resample_counts(codes.max() + 1, 12, seed=3)
    w = counts[:, codes]
    figs = figures_for_weights(P, T, inst, w)
    for b in range(len(w)):
        idx = np.repeat(np.arange(len(P)), w[b])  # the resample, each object as often as its image was drawn
        agg, _ = summarize(P[idx], T[idx], lab[idx], E, cand)
        for k, v in figs.items():
            assert v[b] == pytest.approx(agg[k], rel=1e-9, abs=1e-12), k


def test_weighted_median_even_and_odd_counts():
    P, T, lab, E, _ = _data(n=7)
    inst = per_instance(P, T, lab, E)
    w = np.array([[1, 1, 1, 1, 1, 1, 1], [2, 0, 1, 0, 0, 1, 0], [0, 0, 0, 3, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0]])
    med = figures_for_weights(P, T, inst, w)["residual_median"]
    for b in range(len(w)):
        assert med[b] == pytest.approx(np.median(np.repeat(inst["residual_l2"], w[b])))


def test_resample_counts_draw_groups_with_replacement():
    counts = resample_counts(50, 400, seed=1)
    assert counts.shape == (400, 50) and np.all(counts.sum(1) == 50)
    assert counts.mean() == pytest.approx(1.0) and np.all(counts >= 0)
    assert np.array_equal(counts, resample_counts(50, 400, seed=1))
    from objalign.stats.intervals import _iter_counts

    assert np.array_equal(counts, np.concatenate(list(_iter_counts(50, 400, 1, 7))))  # chunking draws the same


def test_bootstrap_intervals_are_quantiles_of_grouped_resamples(monkeypatch):
    import objalign.stats.intervals as intervals

    monkeypatch.setattr(intervals, "_CHUNK_ELEMENTS", 150 * 37)  # several chunks of resamples
    P, T, lab, E, groups = _data(n=150)
    inst = per_instance(P, T, lab, E)
    ci = bootstrap_figures(P, T, inst, groups, n_resamples=300, confidence=0.9, seed=4)
    _, codes = np.unique(groups, return_inverse=True)
    counts = resample_counts(codes.max() + 1, 300, seed=4)
    top1 = [(np.repeat(inst["rank"], counts[b][codes]) == 1).mean() for b in range(300)]
    r2 = [r2_score(np.repeat(T, counts[b][codes], 0), np.repeat(P, counts[b][codes], 0)) for b in range(300)]
    assert ci["top1"] == pytest.approx(list(np.quantile(top1, [0.05, 0.95])))
    assert ci["r2"] == pytest.approx(list(np.quantile(r2, [0.05, 0.95])))
    agg, _ = summarize(P, T, lab, E)
    for k in ("cosine_mean", "top1", "residual_mean", "r2"):
        assert ci[k][0] <= agg[k] <= ci[k][1]


def test_grouped_bootstrap_is_wider_when_images_are_homogeneous():
    # objects of one image share their outcome: resampling images must show that dependence
    rng = np.random.default_rng(0)
    n_img, per = 40, 8
    groups = np.repeat(np.arange(n_img), per)
    E = np.eye(4)
    lab = np.zeros(n_img * per, dtype=int)
    good = np.repeat(rng.random(n_img) < 0.5, per)
    P = np.where(good[:, None], E[0] + 0.1, E[1])
    inst = per_instance(P, E[lab], lab, E)
    grouped = bootstrap_figures(P, E[lab], inst, groups, 500, seed=0)["top1"]
    single = bootstrap_figures(P, E[lab], inst, np.arange(len(P)), 500, seed=0)["top1"]
    assert (grouped[1] - grouped[0]) > 2 * (single[1] - single[0])


def test_bootstrap_bad_input():
    P, T, lab, E, groups = _data()
    inst = per_instance(P, T, lab, E)
    with pytest.raises(ObjalignError, match="groups"):
        bootstrap_figures(P, T, inst, groups[:-1])
    with pytest.raises(ObjalignError, match="confidence"):
        bootstrap_figures(P, T, inst, groups, confidence=95)
    with pytest.raises(ObjalignError, match="n_resamples"):
        bootstrap_figures(P, T, inst, groups, n_resamples=0)


def test_constant_text_dimensions_are_left_out_of_uniform_r2():
    # some text encoders have dimensions that are constant over all categories; float rounding of their mean
    # leaves a variance of ~1e-60 that would make scikit-learn's per-dimension score arbitrary
    from objalign.stats.metrics import r2_uniform
    from objalign.stats.nulls import CategoryScorer

    P, T, lab, E, groups = _data(n=80)
    E = E.copy()
    E[:, 0] = np.float32(0.1)  # exactly constant
    T = E[lab]
    C = np.eye(len(E))[lab] * 0.7 + 0.3 / len(E)
    P = C @ E
    C = C * 1.1  # rows not summing to 1 (kernel ridge has no intercept): the constant dimension is mispredicted
    P = C @ E
    assert r2_uniform(T, P) == pytest.approx(r2_score(T[:, 1:], P[:, 1:]))
    agg, inst = summarize(P, T, lab, E)
    assert agg["r2_variance_weighted"] == pytest.approx(r2_score(T, P, multioutput="variance_weighted"))
    for k in ("r2", "r2_variance_weighted"):
        assert CategoryScorer(E, lab).figures(C)[k] == pytest.approx(agg[k])
    w = resample_counts(20, 5, seed=0)[:, np.unique(groups, return_inverse=True)[1] % 20]
    got = figures_for_weights(P, T, inst, w)
    for b in range(5):
        idx = np.repeat(np.arange(len(P)), w[b])
        assert got["r2"][b] == pytest.approx(r2_score(T[idx][:, 1:], P[idx][:, 1:]))
        assert got["r2_variance_weighted"][b] == pytest.approx(
            r2_score(T[idx][:, 1:], P[idx][:, 1:], multioutput="variance_weighted"))


def test_figure_names_have_one_definition():
    """Every named subset is made of the figures of stats.metrics, in their report order, and every producer of a
    row's figures (observed, bootstrap, null) yields exactly those names."""
    from objalign.stats import metrics as M
    from objalign.stats.nulls import CategoryScorer

    assert M.ALL_FIGURES == M.FIGURES + M.UNSEEN_FIGURES and M.SMALLER_IS_BETTER <= set(M.ALL_FIGURES)
    for subset in (M.MEAN_FIGURES, M.UNIT_FIGURES, M.CURVE_FIGURES, M.COMPARE_FIGURES, M.TABLE_FIGURES):
        assert list(subset) == [f for f in M.ALL_FIGURES if f in subset]
    rng = np.random.default_rng(0)
    E, lab = rng.normal(size=(6, 4)), rng.integers(0, 6, 20)
    pred = rng.normal(size=(20, 4))
    agg, inst = summarize(pred, E[lab], lab, E, candidates=np.arange(6))
    assert tuple(f for f in agg if f in M.ALL_FIGURES) == M.ALL_FIGURES
    assert tuple(M.instance_values(inst)) == M.MEAN_FIGURES
    scorer = CategoryScorer(E, lab, candidates=np.ones((20, 6), dtype=bool))
    assert set(scorer.figures(rng.normal(size=(20, 6)))) == set(M.ALL_FIGURES)
    ci = bootstrap_figures(pred, E[lab], inst, np.arange(20), n_resamples=20)
    assert tuple(ci) == M.ALL_FIGURES

"""Tests for objalign.stats.resampling (grouped bootstrap) and objalign.stats.permutation (p-values, image-block
permutations)."""

import json

import numpy as np
import pytest
from scipy.stats import norm

from objalign.errors import ObjalignError
from objalign.stats.permutation import group_permutations, permutation_pvalue
from objalign.stats.resampling import bootstrap_ci


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_vectorised_equals_direct_indexing_of_each_resample():
    rng = _rng(0)
    values = rng.normal(size=300)
    groups = rng.integers(0, 90, size=300)
    fast = bootstrap_ci(values, groups, n_resamples=300, seed=5)
    slow = bootstrap_ci(lambda idx: values[idx].mean(), groups, n_resamples=300, seed=5)
    assert fast.estimate == pytest.approx(values.mean(), abs=1e-15)
    assert slow.estimate == pytest.approx(values.mean(), abs=1e-15)
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)
    assert fast.n_groups == len(np.unique(groups)) and fast.n_resamples == 300


def test_bootstrap_ungrouped_width_matches_closed_form_standard_error():
    values = _rng(1).exponential(size=2000)
    res = bootstrap_ci(values, None, n_resamples=4000, confidence=0.9)
    # bootstrap distribution of a mean: sd = sigma_hat / sqrt(n) with the biased (ddof=0) variance
    se = values.std(ddof=0) / np.sqrt(values.size)
    half_width = (res.high - res.low) / 2
    assert half_width == pytest.approx(norm.ppf(0.95) * se, rel=0.08)
    assert res.low < values.mean() < res.high
    assert bootstrap_ci(values, np.arange(values.size), n_resamples=500).low == bootstrap_ci(
        values, None, n_resamples=500
    ).low


def test_bootstrap_resamples_whole_groups():
    rng = _rng(2)
    n_groups, size = 400, 5
    group_means = rng.normal(size=n_groups)
    values = np.repeat(group_means, size)  # perfectly correlated within a group
    groups = np.repeat(np.arange(n_groups), size)
    grouped = bootstrap_ci(values, groups, n_resamples=3000)
    naive = bootstrap_ci(values, None, n_resamples=3000)
    # grouped bootstrap of the mean = bootstrap of the n_groups group means
    se = group_means.std(ddof=0) / np.sqrt(n_groups)
    assert (grouped.high - grouped.low) / 2 == pytest.approx(norm.ppf(0.975) * se, rel=0.1)
    ratio = (grouped.high - grouped.low) / (naive.high - naive.low)
    assert ratio == pytest.approx(np.sqrt(size), rel=0.15)


def test_bootstrap_columns_share_resamples_and_match_1d_runs():
    rng = _rng(3)
    values = rng.normal(size=(200, 3))
    groups = np.array([f"img{i // 3}" for i in range(200)])  # string image ids work
    res = bootstrap_ci(values, groups, n_resamples=400, seed=11)
    for j in range(3):
        one = bootstrap_ci(values[:, j], groups, n_resamples=400, seed=11)
        assert res.low[j] == pytest.approx(one.low, abs=1e-12)
        assert res.high[j] == pytest.approx(one.high, abs=1e-12)
        assert res.estimate[j] == pytest.approx(values[:, j].mean())
    json.dumps(res.as_dict())
    json.dumps(bootstrap_ci(values[:, 0], groups, n_resamples=50).as_dict())


def test_bootstrap_seed_controls_the_draws():
    values = _rng(4).normal(size=100)
    a = bootstrap_ci(values, None, n_resamples=200, seed=1)
    assert a == bootstrap_ci(values, None, n_resamples=200, seed=1)
    assert a.low != bootstrap_ci(values, None, n_resamples=200, seed=2).low


def test_bootstrap_callable_non_mean_statistic():
    values = _rng(5).normal(size=150)
    groups = np.arange(150) // 2
    res = bootstrap_ci(lambda idx: np.median(values[idx]), groups, n_resamples=200)
    assert res.estimate == pytest.approx(np.median(values))
    assert res.low < res.estimate < res.high
    two = bootstrap_ci(lambda idx: np.array([values[idx].mean(), values[idx].max()]), groups, n_resamples=50)
    assert two.estimate.shape == (2,) and np.all(two.low <= two.high)


def test_bootstrap_errors():
    values = np.arange(10.0)
    with pytest.raises(ObjalignError, match="10 instances"):
        bootstrap_ci(values, np.arange(9))
    with pytest.raises(ObjalignError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan]), None)
    with pytest.raises(ObjalignError, match="confidence"):
        bootstrap_ci(values, None, confidence=95)
    with pytest.raises(ObjalignError, match="n_resamples"):
        bootstrap_ci(values, None, n_resamples=0)
    with pytest.raises(ObjalignError, match="needs groups"):
        bootstrap_ci(lambda idx: 0.0, None)
    with pytest.raises(ObjalignError, match="shape"):
        bootstrap_ci(np.zeros((2, 2, 2)), None)
    with pytest.raises(ObjalignError, match="1-D"):
        bootstrap_ci(values, np.zeros((10, 2)))
    with pytest.raises(ObjalignError, match="NaN or infinite on"):
        bootstrap_ci(lambda idx: np.nan if len(np.unique(idx)) < 10 else 0.0, np.arange(10), n_resamples=20)


# ---------------------------------------------------------------------------------------- p-values
def test_permutation_pvalue_rule():
    null = np.array([0.1, 0.5, 0.5, 0.9])
    assert permutation_pvalue(0.5, null) == pytest.approx((1 + 3) / 5)
    assert permutation_pvalue(1.0, null) == pytest.approx(1 / 5)
    assert permutation_pvalue(0.5, null, alternative="less") == pytest.approx((1 + 3) / 5)
    assert permutation_pvalue(0.0, null, alternative="less") == pytest.approx(1 / 5)
    assert permutation_pvalue(1.0, null, alternative="two-sided") == pytest.approx(2 / 5)
    assert permutation_pvalue(0.5, null, alternative="two-sided") == 1.0


def test_permutation_pvalue_errors():
    with pytest.raises(ObjalignError, match="alternative"):
        permutation_pvalue(1.0, [0.0], alternative="bigger")
    with pytest.raises(ObjalignError, match="non-empty"):
        permutation_pvalue(1.0, [])
    with pytest.raises(ObjalignError, match="NaN"):
        permutation_pvalue(1.0, [0.0, np.nan])
    with pytest.raises(ObjalignError, match="finite"):
        permutation_pvalue(np.nan, [0.0])


# ------------------------------------------------------------------------------------ permutations
def test_group_permutations_move_whole_images():
    rng = _rng(6)
    sizes = rng.integers(1, 5, size=60)
    sizes[0] = 7  # a unique size: that image keeps its own labels
    groups = rng.permutation(np.repeat(np.arange(60) * 10, sizes))  # scattered, non-contiguous ids
    perms = group_permutations(groups, 50, seed=3)
    assert perms.shape == (50, groups.size)
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    moved = 0
    for pi in perms:
        assert np.array_equal(np.sort(pi), np.arange(groups.size))
        for g, rows in members.items():
            src = groups[pi[rows]]
            assert np.all(src == src[0])  # all rows of an image come from one image
            assert np.array_equal(pi[rows], members[src[0]])  # in index order, whole block
            moved += src[0] != g
    assert np.array_equal(perms[:, members[0]], np.broadcast_to(members[0], (50, 7)))
    assert moved > 0.5 * 50 * 59


def test_group_permutations_ungrouped_is_uniform():
    perms = group_permutations(5, 6000, seed=0)
    freq = np.mean(perms == np.arange(5), axis=0)  # P(pi[i] == i) = 1/5
    assert np.allclose(freq, 0.2, atol=0.02)
    assert np.array_equal(group_permutations(5, 10, seed=0), group_permutations(np.arange(5), 10, seed=0))

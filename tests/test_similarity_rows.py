"""Text targets repeat one row per category: what the similarity measures and their permutation engines compute from
the ``u`` category rows (expanded by the codes) equals the computation on all ``n`` rows, and a target set's figures
do not depend on which other target sets share the cache.
"""

import json

import numpy as np
import pytest

from objalign.errors import ObjalignError
from objalign.measures import _kernels as kern
from objalign.measures import _sides as sides
from objalign.measures import similarity as sim
from objalign.measures.calibrate import calibrated

MEASURES = {
    "cka_linear": lambda X, Y: sim.cka(X, Y),
    "cka_linear_unbiased": lambda X, Y: sim.cka(X, Y, unbiased=True),
    "cka_rbf": lambda X, Y: sim.cka(X, Y, kernel="rbf"),
    "cka_rbf_unbiased": lambda X, Y: sim.cka(X, Y, kernel="rbf", unbiased=True, sigma=0.4),
    "mutual_knn": lambda X, Y: sim.mutual_knn(X, Y, k=7),
    "cknna": lambda X, Y: sim.cknna(X, Y, k=7),
    "svcca": lambda X, Y: sim.svcca(X, Y, dim=4),
}
ENGINES = {"cka_linear": {}, "cka_linear_unbiased": {}, "cka_rbf": {}, "mutual_knn": {"k": 7}, "cknna": {"k": 7},
           "svcca": {"dim": 4}}


def _problem(seed=0, n=90, c=9, q=12, ties=False):
    """Vision features X, image ids and text targets Y = E[labels] with one category of a single object; ``ties``:
    two categories share a direction (equal cosines across categories) and two are equal up to scale."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, c - 1, n)
    lab[int(rng.integers(n))] = c - 1  # a category with one object
    E = rng.normal(size=(c, q))
    if ties:
        E[1] = 3.0 * E[0]
        E[3] = E[2] + 1e-3 * rng.normal(size=q)
    X = E[lab] @ rng.normal(size=(q, 10)) + rng.normal(size=(n, 10))
    groups = np.repeat(np.arange(n // 3 + 1), 3)[:n]
    return X, groups, E[lab]


def _dense(monkeypatch):
    """Turn the category-row path off: every matrix is computed from its n rows."""
    monkeypatch.setattr(sides, "CODED_FRACTION", 0.0)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_category_rows_equal_the_row_computation(seed, ties):
    _, _, Y = _problem(seed, ties=ties)
    side = sides.side_of(None, "Y", Y)
    assert side.rows() is not None and len(side.rows().U) == 9
    Yc = kern.center(Y)
    close = {"atol": 1e-12, "rtol": 0}
    np.testing.assert_allclose(side.centered(), Yc, **close)
    np.testing.assert_allclose(side.linear(), Yc @ Yc.T, **close)
    for fraction in (0.4, 0.8):
        np.testing.assert_allclose(side.rbf(fraction), kern.rbf_gram(Yc, fraction, "Y"), **close)
    S = kern.cosine_gram(Y, "Y")
    np.testing.assert_allclose(side.cosine(), S, **close)
    for k in (1, 3, 7, 12, 40, 89):  # the k-th neighbour inside a category's block, at its edge, in the tied pair
        W = side.knn(k, "average")
        np.testing.assert_allclose(W, kern.neighbour_weights(S, k, "average"), **close)
        np.testing.assert_allclose(W.sum(1), k, **close)
    for dim in (1, 4, 7):  # the same subspace: equal projectors
        U, ref = side.subspace(dim), kern.top_subspace(Yc, dim, "Y")
        np.testing.assert_allclose(U.T @ U, np.eye(dim), **close)
        np.testing.assert_allclose(U @ U.T, ref @ ref.T, atol=1e-10, rtol=0)


def test_weighted_median_is_np_median():
    rng = np.random.default_rng(0)
    for _ in range(300):
        u = int(rng.integers(1, 12))
        values = rng.integers(0, 6, u) * 0.5  # repeated values too
        weights = rng.integers(0, 5, u)
        if weights.sum() == 0:
            weights[0] = 1
        assert kern.weighted_median(values, weights) == np.median(np.repeat(values, weights))


def test_errors_match_the_row_computation(monkeypatch):
    X, _, Y = _problem()
    zero = Y.copy()
    zero[Y[:, 0] == Y[5, 0]] = 0.0  # one category's text embedding is all zeros
    messages = []
    for dense in (False, True):
        with monkeypatch.context() as m:
            if dense:
                _dense(m)
            out = []
            for f in (lambda: sim.mutual_knn(X, zero, k=5), lambda: sim.cknna(X, zero, k=5),
                      lambda: sim.cka(X, np.repeat(Y[:1], 90, axis=0) + (np.arange(90) > 70)[:, None], kernel="rbf"),
                      lambda: sim.svcca(X, Y, dim=9)):  # 9 categories: centred rank 8
                with pytest.raises(ObjalignError) as err:
                    f()
                out.append(str(err.value))
            messages.append(out)
    assert messages[0] == messages[1]
    assert "all-zero rows (first at row" in messages[0][0] and "median pairwise distance" in messages[0][2]
    assert "rank 8" in messages[0][3]


@pytest.mark.parametrize("ties", [False, True])
def test_measures_and_calibration_equal_the_row_computation(monkeypatch, ties):
    X, groups, Y = _problem(3, ties=ties)
    rows = {name: f(X, Y) for name, f in MEASURES.items()}
    nulls = {name: calibrated(name, X, Y, groups, 40, seed=2, **opt) for name, opt in ENGINES.items()}
    _dense(monkeypatch)
    for name, f in MEASURES.items():
        assert rows[name] == pytest.approx(f(X, Y), abs=1e-12, rel=0), name
    for name, opt in ENGINES.items():
        ref = calibrated(name, X, Y, groups, 40, seed=2, **opt)
        np.testing.assert_allclose(nulls[name]["null"], ref["null"], atol=1e-12, rtol=0, err_msg=name)
        assert nulls[name]["pvalue"] == ref["pvalue"], name


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_target_set_alone_equals_it_among_other_target_sets():
    from objalign.config import AlignConfig
    from objalign.evaluation.heldout_similarity import heldout_similarity as _similarity

    X, groups, Y = _problem(4, n=120)
    rng = np.random.default_rng(4)
    lab = np.unique(Y, axis=0, return_inverse=True)[1].ravel()
    E = np.unique(Y, axis=0)
    others = {
        "relabelled": rng.normal(size=(len(E), 7))[lab],  # the same categories, other rows and order
        "same_rows_other_partition": E[rng.permutation(lab)],  # the same category rows, other objects
        "coarser": rng.normal(size=(3, 12))[lab % 3],  # fewer categories
        "dense": X[:, :6] + rng.normal(size=(len(X), 6)),  # every row distinct
        "scaled": 2.0 * Y,
    }
    cfg = AlignConfig(similarity_k=6, svcca_dim=4, similarity_permutations=30)
    alone = _similarity(X, Y, groups, cfg)
    assert alone["calibrated"] and all(v is not None for v in alone["values"].values())
    for order in (list(others), list(others)[::-1]):
        cache: dict = {}
        for key in order[:3]:
            _similarity(X, others[key], groups, cfg, cache=cache)
        assert _same(_similarity(X, Y, groups, cfg, cache=cache), alone)
        for key in order[3:]:
            _similarity(X, others[key], groups, cfg, cache=cache)
        assert _same(_similarity(X, Y, groups, cfg, cache=cache), alone)
    for key, T in others.items():  # and each other set alone equals itself after Y
        cache = {}
        _similarity(X, Y, groups, cfg, cache=cache)
        assert _same(_similarity(X, T, groups, cfg, cache=cache), _similarity(X, T, groups, cfg)), key


def test_values_are_the_measures(monkeypatch):
    """``_similarity``'s values (by the permutation engines) equal the measures computed on every row."""
    from objalign.config import AlignConfig
    from objalign.evaluation.heldout_similarity import heldout_similarity as _similarity

    X, groups, Y = _problem(5, ties=True)
    cfg = AlignConfig(similarity_k=7, svcca_dim=4, similarity_permutations=0)
    got = _similarity(X, Y, groups, cfg)["values"]
    _dense(monkeypatch)
    for name in ENGINES:
        assert got[name] == pytest.approx(MEASURES[name](X, Y), abs=1e-12, rel=0), name


@pytest.mark.parametrize("ties", [False, True])
def test_category_level_hsic_terms_equal_the_n_by_n_ones(ties):
    from objalign.measures._grouping import CodedKernel as _CodedKernel

    _, _, Y = _problem(6, ties=ties)
    side = sides.side_of(None, "Y", Y)
    rows, codes = side.rows(), side.coded()[1]
    for k in (3, 7):  # CKNNA's self-alignment: HSIC_u of W o K with a zero diagonal
        T = side.knn_table(k) * side.cosine_table()
        A = side.knn(k, "average") * side.cosine()
        assert rows.hsic_unbiased_self(T) == pytest.approx(kern.hsic_unbiased(A, A), abs=1e-12, rel=0)
    L = side.rbf(0.8)  # the double-centred kernel's squared norm (biased RBF CKA)
    got = _CodedKernel(codes, rows.rbf(0.8)).sq_norm_centred()
    assert got == pytest.approx(float(np.sum(kern.double_center(L) ** 2)), abs=1e-10, rel=1e-13)
    assert sim.distinct_rows(Y) == 9 and sim.distinct_rows(np.arange(12.0).reshape(6, 2)) == 6


def test_neighbour_weight_nonzeros_from_the_table():
    from objalign.measures._grouping import knn_nonzeros as _knn_nonzeros

    for ties in (False, True):
        _, _, Y = _problem(7, ties=ties)
        for k in (1, 5, 30):
            side = sides.side_of(None, "Y", Y)
            assert _knn_nonzeros(side, k) == np.count_nonzero(side.knn(k, "average"))

"""Tests for objalign.measures.similarity: closed forms, brute-force loops, random-data behaviour."""

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from objalign.errors import ObjalignError
from objalign.measures.similarity import cka, cknna, hsic, mutual_knn, svcca


def _rng(seed=0):
    return np.random.default_rng(seed)


def _related(n=60, dx=8, dy=5, noise=1.0, seed=0):
    rng = _rng(seed)
    X = rng.normal(size=(n, dx))
    Y = X @ rng.normal(size=(dx, dy)) + noise * rng.normal(size=(n, dy))
    return X, Y


def _orthogonal(d, seed=1):
    q, _ = np.linalg.qr(_rng(seed).normal(size=(d, d)))
    return q


def _unit_rows(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- independent references
def _hsic_biased_loop(K, L):
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def _hsic_ustat_loop(K, L):
    """Song et al. 2012 U-statistic: mean over ordered distinct 4-tuples of
    K_ij L_ij + K_ij L_qr - 2 K_ij L_iq (symmetric K, L)."""
    n = len(K)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    return total / count


def _hsic_reference_loop(K, L):
    """The platonic-rep hsic_unbiased formula written with explicit loops (works for non-symmetric K, L)."""
    n = len(K)
    Kt = [[0.0 if i == j else K[i][j] for j in range(n)] for i in range(n)]
    Lt = [[0.0 if i == j else L[i][j] for j in range(n)] for i in range(n)]
    tr = sum(Kt[i][j] * Lt[j][i] for i in range(n) for j in range(n))
    sk = sum(map(sum, Kt))
    sl = sum(map(sum, Lt))
    cross = sum(Kt[i][j] * Lt[j][m] for i in range(n) for j in range(n) for m in range(n))
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))


def _cos(A):
    Z = _unit_rows(np.asarray(A, dtype=float))
    return Z @ Z.T


def _knn_sets_loop(A, k, decimals=12):
    """k nearest neighbours by cosine, self excluded, ties broken by lowest index."""
    S = np.round(_cos(A), decimals)
    n = len(A)
    return [set(sorted((j for j in range(n) if j != i), key=lambda j: (-S[i, j], j))[:k]) for i in range(n)]


def _knn_choices_loop(A, k, decimals=12):
    """All neighbour sets consistent with some tie-break at the k-th neighbour, per sample."""
    S = np.round(_cos(A), decimals)
    n = len(A)
    out = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: -S[i, j])
        kth = S[i, others[k - 1]]
        above = [j for j in others if S[i, j] > kth]
        tied = [j for j in others if S[i, j] == kth]
        out.append([set(above) | set(c) for c in itertools.combinations(tied, k - len(above))])
    return out


# ------------------------------------------------------------------------------------------------ CKA
def test_linear_cka_matches_feature_space_formula_both_paths():
    for n, dx, dy in [(200, 5, 3), (12, 40, 30)]:  # feature-space path, then Gram path
        X, Y = _related(n, dx, dy, seed=n)
        Xc, Yc = X - X.mean(0), Y - Y.mean(0)
        expected = np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
        assert cka(X, Y) == pytest.approx(expected, rel=1e-12)
        gram_form = _hsic_biased_loop(X @ X.T, Y @ Y.T) / np.sqrt(
            _hsic_biased_loop(X @ X.T, X @ X.T) * _hsic_biased_loop(Y @ Y.T, Y @ Y.T)
        )
        assert cka(X, Y) == pytest.approx(gram_form, rel=1e-10)


@pytest.mark.parametrize("kernel,unbiased", [(k, u) for k in ("linear", "rbf") for u in (False, True)])
def test_cka_is_one_under_orthogonal_transform_scaling_and_shift(kernel, unbiased):
    X, _ = _related(50, 6, 2, seed=3)
    Z = 3.7 * X @ _orthogonal(6) + 5.0
    assert cka(X, Z, kernel=kernel, unbiased=unbiased) == pytest.approx(1.0, abs=1e-10)
    # and it is symmetric in its arguments
    _, Y = _related(50, 6, 4, seed=4)
    assert cka(X, Y, kernel=kernel, unbiased=unbiased) == pytest.approx(
        cka(Y, X, kernel=kernel, unbiased=unbiased), rel=1e-12
    )


def test_cka_not_one_under_non_isotropic_scaling():
    X, _ = _related(80, 4, 2, seed=5)
    assert cka(X, X * np.array([1.0, 1.0, 1.0, 10.0])) < 0.95


def test_hsic_unbiased_equals_song_u_statistic_loop():
    rng = _rng(7)
    A, B = rng.normal(size=(7, 3)), rng.normal(size=(7, 2))
    K = A @ A.T
    L = np.exp(-squareform(pdist(B, "sqeuclidean")))
    assert hsic(K, L, unbiased=True) == pytest.approx(_hsic_ustat_loop(K, L), rel=1e-10)
    assert hsic(K, L, unbiased=True) == pytest.approx(_hsic_reference_loop(K, L), rel=1e-10)
    assert hsic(K, L) == pytest.approx(_hsic_biased_loop(K, L), rel=1e-12)


def test_unbiased_linear_cka_matches_loop_and_ignores_centring():
    X, Y = _related(9, 3, 2, seed=8)
    K, L = X @ X.T, Y @ Y.T
    expected = _hsic_ustat_loop(K, L) / np.sqrt(_hsic_ustat_loop(K, K) * _hsic_ustat_loop(L, L))
    assert cka(X, Y, unbiased=True) == pytest.approx(expected, rel=1e-9)


def test_rbf_cka_matches_independent_implementation():
    X, Y = _related(40, 5, 3, seed=9)
    for frac in (0.4, 0.8):

        def gram(A):
            d = pdist(A)
            sigma = frac * np.median(d)
            return np.exp(-squareform(d) ** 2 / (2 * sigma**2))

        K, L = gram(X), gram(Y)
        expected = _hsic_biased_loop(K, L) / np.sqrt(_hsic_biased_loop(K, K) * _hsic_biased_loop(L, L))
        assert cka(X, Y, kernel="rbf", sigma=frac) == pytest.approx(expected, rel=1e-10)
    assert cka(X, Y, kernel="rbf") == cka(X, Y, kernel="rbf", sigma=0.8)


def test_unbiased_cka_near_zero_on_independent_data_biased_is_not():
    rng = _rng(10)
    X, Y = rng.normal(size=(300, 30)), rng.normal(size=(300, 40))
    biased, unbiased = cka(X, Y), cka(X, Y, unbiased=True)
    assert abs(unbiased) < 0.01
    assert biased > 0.05  # the known small-sample bias of the biased estimator (about d / n here)
    assert abs(cka(X, Y, kernel="rbf", unbiased=True)) < 0.01


def test_cka_increases_with_shared_signal():
    values = [cka(*_related(200, 6, 6, noise=s, seed=11)) for s in (10.0, 1.0, 0.1)]
    assert values[0] < values[1] < values[2] <= 1.0


def test_cka_errors():
    X, Y = _related(20, 3, 2)
    with pytest.raises(ObjalignError, match="same number of rows"):
        cka(X, Y[:-1])
    with pytest.raises(ObjalignError, match="2-D"):
        cka(X[:, 0], Y)
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ObjalignError, match="NaN"):
        cka(Xn, Y)
    with pytest.raises(ObjalignError, match="not constant"):
        cka(np.ones((20, 3)), Y)
    with pytest.raises(ObjalignError, match="kernel="):
        cka(X, Y, kernel="poly")
    with pytest.raises(ObjalignError, match="sigma only applies"):
        cka(X, Y, sigma=0.5)
    with pytest.raises(ObjalignError, match="sigma="):
        cka(X, Y, kernel="rbf", sigma=-1.0)
    with pytest.raises(ObjalignError, match="at least 4"):
        cka(X[:3], Y[:3], unbiased=True)
    Yd = np.repeat(Y[:1], 20, axis=0)
    Yd[:3] += 1.0
    with pytest.raises(ObjalignError, match="median pairwise distance of Y"):
        cka(X, Yd, kernel="rbf")
    with pytest.raises(ValueError):  # ObjalignError is a ValueError
        cka("abc", Y)


# ----------------------------------------------------------------------------------------- mutual k-NN
def test_mutual_knn_matches_brute_force_without_ties():
    X, Y = _related(40, 6, 4, noise=2.0, seed=12)
    for k in (1, 3, 10):
        NX, NY = _knn_sets_loop(X, k), _knn_sets_loop(Y, k)
        expected = np.mean([len(a & b) / k for a, b in zip(NX, NY)])
        assert mutual_knn(X, Y, k=k) == pytest.approx(expected, abs=1e-12)
        assert mutual_knn(X, Y, k=k, ties="index") == pytest.approx(expected, abs=1e-12)


def test_mutual_knn_closed_forms():
    X, _ = _related(30, 5, 2, seed=13)
    scales = _rng(14).uniform(0.5, 4.0, size=(30, 1))
    assert mutual_knn(X, scales * X, k=5) == 1.0  # cosine ignores per-row scale
    rng = _rng(15)
    A, B = rng.normal(size=(400, 20)), rng.normal(size=(400, 20))
    k = 20
    assert mutual_knn(A, B, k=k) == pytest.approx(k / 399, abs=0.02)  # chance level


def _tied_data():
    rng = _rng(16)
    categories = np.repeat(np.arange(3), [4, 3, 2])  # Y: one text embedding per category
    protos = np.eye(3) + 0.1
    Y = protos[categories]
    X = rng.normal(size=(9, 4))
    X[5] = 2.0 * X[1]  # an exact cosine tie in X as well
    return X, Y


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_mutual_knn_average_ties_is_exact_expectation_over_tie_breaks(k):
    X, Y = _tied_data()
    CX, CY = _knn_choices_loop(X, k), _knn_choices_loop(Y, k)
    expected = np.mean([np.mean([len(a & b) / k for a in cx for b in cy]) for cx, cy in zip(CX, CY)])
    assert mutual_knn(X, Y, k=k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_mutual_knn_index_ties_matches_stable_sort(k):
    X, Y = _tied_data()
    NX, NY = _knn_sets_loop(X, k), _knn_sets_loop(Y, k)
    expected = np.mean([len(a & b) / k for a, b in zip(NX, NY)])
    assert mutual_knn(X, Y, k=k, ties="index") == pytest.approx(expected, abs=1e-12)


def test_average_tie_rule_is_order_invariant_index_rule_is_deterministic():
    X, Y = _tied_data()
    perm = _rng(17).permutation(len(X))
    for fn in (mutual_knn, cknna):
        assert fn(X[perm], Y[perm], k=3) == pytest.approx(fn(X, Y, k=3), abs=1e-12)
        assert fn(X, Y, k=3, ties="index") == fn(X, Y, k=3, ties="index")


def test_knn_errors():
    X, Y = _related(10, 3, 2)
    for fn in (mutual_knn, cknna):
        with pytest.raises(ObjalignError, match="out of range"):
            fn(X, Y, k=10)
        with pytest.raises(ObjalignError, match="integer"):
            fn(X, Y, k=2.5)
        with pytest.raises(ObjalignError, match="ties="):
            fn(X, Y, k=3, ties="random")
        Xz = X.copy()
        Xz[4] = 0.0
        with pytest.raises(ObjalignError, match="all-zero rows"):
            fn(Xz, Y, k=3)
    with pytest.raises(ObjalignError, match="out of range"):
        cknna(X, Y, k=1)  # CKNNA needs k >= 2 like the reference


# ---------------------------------------------------------------------------------------------- CKNNA
def _cknna_reference_loop(X, Y, k):
    n = len(X)
    K, L = _cos(X), _cos(Y)
    NK, NL = _knn_sets_loop(X, k), _knn_sets_loop(Y, k)

    def masked(M_sets, A):
        return [[A[i, j] if j in M_sets[i] else 0.0 for j in range(n)] for i in range(n)]

    both = [a & b for a, b in zip(NK, NL)]
    kl = _hsic_reference_loop(masked(both, K), masked(both, L))
    kk = _hsic_reference_loop(masked(NK, K), masked(NK, K))
    ll = _hsic_reference_loop(masked(NL, L), masked(NL, L))
    return kl / np.sqrt(kk * ll)


def test_cknna_matches_reference_loop_without_ties():
    X, Y = _related(16, 5, 4, noise=1.5, seed=18)
    for k in (2, 4, 9):
        expected = _cknna_reference_loop(X, Y, k)
        assert cknna(X, Y, k=k) == pytest.approx(expected, rel=1e-9)
        assert cknna(X, Y, k=k, ties="index") == pytest.approx(expected, rel=1e-9)


def test_cknna_index_ties_matches_reference_loop():
    X, Y = _tied_data()
    assert cknna(X, Y, k=3, ties="index") == pytest.approx(_cknna_reference_loop(X, Y, 3), rel=1e-9)


def test_cknna_closed_forms():
    X, Y = _related(25, 5, 4, seed=19)
    # all pairs kept: unbiased linear CKA of the row-normalised features
    assert cknna(X, Y, k=24) == pytest.approx(cka(_unit_rows(X), _unit_rows(Y), unbiased=True), rel=1e-10)
    assert cknna(X, 2.0 * X, k=5) == pytest.approx(1.0, abs=1e-12)
    # the reference formula is symmetric only when the mask keeps every pair
    assert cknna(X, Y, k=24) == pytest.approx(cknna(Y, X, k=24), rel=1e-12)
    assert cknna(Y, X, k=6) == pytest.approx(_cknna_reference_loop(Y, X, 6), rel=1e-9)
    rng = _rng(20)
    A, B = rng.normal(size=(300, 20)), rng.normal(size=(300, 20))
    assert abs(cknna(A, B, k=10)) < 0.05
    Xs, Ys = _related(300, 10, 10, noise=0.3, seed=21)
    assert cknna(Xs, Ys, k=10) > 0.3


# ---------------------------------------------------------------------------------------------- SVCCA
def _svcca_reference(X, Y, dim):
    """Eigen-decomposition route: PCA projection, then classic CCA via covariance matrices."""

    def reduce(A):
        Ac = A - A.mean(0)
        U, s, _ = np.linalg.svd(Ac, full_matrices=False)
        return U[:, :dim] * s[:dim]

    A, B = reduce(X), reduce(Y)
    Saa, Sbb, Sab = A.T @ A, B.T @ B, A.T @ B
    M = np.linalg.solve(Saa, Sab) @ np.linalg.solve(Sbb, Sab.T)
    rho2 = np.sort(np.linalg.eigvals(M).real)[::-1]
    return np.mean(np.sqrt(np.clip(rho2, 0, 1)))


def test_svcca_matches_eigen_cca_reference():
    X, Y = _related(120, 12, 9, noise=1.0, seed=22)
    for dim in (1, 4, 9):
        assert svcca(X, Y, dim=dim) == pytest.approx(_svcca_reference(X, Y, dim), rel=1e-8)
    Xw, Yw = _related(20, 30, 25, noise=1.0, seed=26)  # wider than tall: the Xc Xc^T route
    for dim in (3, 10):
        assert svcca(Xw, Yw, dim=dim) == pytest.approx(_svcca_reference(Xw, Yw, dim), rel=1e-8)


def test_svcca_closed_forms():
    X, _ = _related(80, 7, 2, seed=23)
    assert svcca(X, -2.5 * X @ _orthogonal(7) + 3.0, dim=5) == pytest.approx(1.0, abs=1e-10)
    rng = _rng(24)
    A, B = rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))
    assert svcca(A, B, dim=5) < 0.1
    assert 0.0 <= svcca(*_related(50, 6, 6, seed=25), dim=6) <= 1.0


def test_svcca_errors():
    X, Y = _related(30, 6, 4)
    with pytest.raises(ObjalignError, match="too large"):
        svcca(X, Y, dim=5)
    with pytest.raises(ObjalignError, match="positive integer"):
        svcca(X, Y, dim=0)
    low_rank = X[:, :2] @ _rng(1).normal(size=(2, 6))
    with pytest.raises(ObjalignError, match="rank 2"):
        svcca(low_rank, X, dim=3)

"""Blind matching, RSA and open-vocabulary retrieval against their definitions (brute force, scipy, formulas)."""

import itertools

import numpy as np
import pytest
from scipy import stats

from objalign.data.vocab import load_vocabulary
from objalign.errors import ObjalignError
from objalign.measures.matching import (blind_match, category_prototypes, cosine_kernel, match_accuracy, match_study,
                                        qap_objective)
from objalign.measures.retrieval import candidate_index, csls_scores, precision_at_k, retrieval
from objalign.measures.rsa import compare_rdms, crossval_rdm, kendall_tau_a, rdm, rsa


def _kernel(n, seed=0, d=6):
    return cosine_kernel(np.random.default_rng(seed).normal(size=(n, d)))


# ------------------------------------------------------------------------------------------------ matching
@pytest.mark.parametrize("method", ["faq", "local_cka", "exact"])
def test_recovers_a_permuted_copy_of_a_kernel_exactly(method):
    n = 8 if method == "exact" else 25
    K = _kernel(n, seed=1)
    p = np.random.default_rng(2).permutation(n)
    perm = blind_match(K, K[np.ix_(p, p)], method=method)
    np.testing.assert_array_equal(perm, np.argsort(p))  # vision i is name j with p[j] = i


@pytest.mark.parametrize("n", [4, 6, 8])
def test_faq_agrees_with_brute_force(n):
    for seed in range(3):
        Kx, Ky = _kernel(n, seed=10 + seed), _kernel(n, seed=20 + seed)
        allp = np.array(list(itertools.permutations(range(n))))
        best = np.einsum("ij,pij->p", Kx, Ky[allp[:, :, None], allp[:, None, :]]).max()
        assert qap_objective(Kx, Ky, blind_match(Kx, Ky, restarts=20, random_state=seed)) == pytest.approx(best)
        assert qap_objective(Kx, Ky, blind_match(Kx, Ky, method="exact")) == pytest.approx(best)


def test_seeds_are_kept_and_exact_respects_them():
    Kx, Ky = _kernel(7, seed=3), _kernel(7, seed=4)
    seeds = np.array([[0, 3], [4, 1]])
    for method in ("faq", "local_cka", "exact"):
        perm = blind_match(Kx, Ky, seeds=seeds, method=method)
        assert perm[0] == 3 and perm[4] == 1 and sorted(perm) == list(range(7))
    free = [i for i in range(7) if i not in (0, 4)]
    targets = [j for j in range(7) if j not in (3, 1)]
    best = -np.inf
    for q in itertools.permutations(targets):
        perm = np.empty(7, dtype=int)
        perm[[0, 4]] = [3, 1]
        perm[free] = q
        best = max(best, qap_objective(Kx, Ky, perm))
    assert qap_objective(Kx, Ky, blind_match(Kx, Ky, seeds=seeds, method="exact")) == pytest.approx(best)


def test_seeded_local_cka_recovers_a_noisy_copy():
    rng = np.random.default_rng(5)
    E = rng.normal(size=(30, 8))
    p = rng.permutation(30)
    Kx, Ky = cosine_kernel(E), cosine_kernel(E[p] + 0.05 * rng.normal(size=(30, 8)))
    truth = np.argsort(p)
    seeds = np.c_[np.arange(4), truth[:4]]
    assert np.mean(blind_match(Kx, Ky, seeds=seeds, method="local_cka") == truth) > 0.9


def test_random_assignment_averages_one_over_n():
    n, rng = 6, np.random.default_rng(0)
    accs = [match_accuracy(rng.permutation(n)) for _ in range(4000)]
    assert np.mean(accs) == pytest.approx(1 / n, abs=0.01)
    # matching unrelated kernels is no better than a random assignment
    accs = [match_accuracy(blind_match(_kernel(n, 100 + s), _kernel(n, 500 + s), restarts=3)) for s in range(300)]
    assert np.mean(accs) == pytest.approx(1 / n, abs=0.035)


def test_prototypes_are_means_of_unit_rows():
    X = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    P = category_prototypes(X, [0, 0, 1], 3)
    np.testing.assert_allclose(P[0], [(0.6 + 0) / 2, (0.8 + 1) / 2])
    np.testing.assert_allclose(P[1], [1, 0])
    assert np.all(np.isnan(P[2]))


def test_match_study_on_shared_geometry():
    rng = np.random.default_rng(0)
    c, n = 10, 600
    E = rng.normal(size=(c, 16))
    lab = np.tile(np.arange(c), n // c)
    X = E[lab] @ np.linalg.qr(rng.normal(size=(16, 16)))[0] + 0.2 * rng.normal(size=(n, 16))  # a rotation + noise
    r = match_study(X, lab, E, np.arange(n) // 3, restarts=5, n_bootstrap=20)
    faq = r["methods"]["faq"]
    assert faq["accuracy"] == 1.0 and faq["ci"][0] > 0.5 and r["chance"] == 0.1
    curve = [p["accuracy_mean"] for p in faq["shuffle_curve"]]
    assert curve[0] == 1.0 and curve[-1] < 0.5


def test_matching_bad_input():
    with pytest.raises(ObjalignError, match="at least 3 categories, got 2"):
        blind_match(np.eye(2), np.eye(2))
    with pytest.raises(ObjalignError, match="method='hungry'"):
        blind_match(np.eye(3), np.eye(3), method="hungry")
    bad = np.eye(4)
    bad[1, 2] = np.inf
    with pytest.raises(ObjalignError, match="Kx contains NaN or infinite"):
        blind_match(bad, np.eye(4))
    with pytest.raises(ObjalignError, match="seeds must index"):
        blind_match(np.eye(4), np.eye(4), seeds=[[0, 9]])
    with pytest.raises(ObjalignError, match="at least 3 categories with objects, got 2"):
        match_study(np.ones((4, 3)), [0, 1, 0, 1], np.eye(3), [0, 1, 2, 3])


# ------------------------------------------------------------------------------------------------------ RSA
def test_rsa_equals_spearman_of_upper_triangles():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(15, 7)), rng.normal(size=(15, 5))
    iu = np.triu_indices(15, 1)
    rx = (1 - np.corrcoef(X))[iu]
    ry = (1 - np.corrcoef(Y))[iu]
    assert rsa(X, Y) == pytest.approx(stats.spearmanr(rx, ry).statistic, abs=1e-12)
    dx = np.linalg.norm(X[:, None] - X[None], axis=2)[iu]
    dy = np.linalg.norm(Y[:, None] - Y[None], axis=2)[iu]
    assert rsa(X, Y, rdm="euclidean") == pytest.approx(stats.spearmanr(dx, dy).statistic, abs=1e-12)
    np.testing.assert_allclose(rdm(X, "euclidean"), dx, atol=1e-12)


def test_kendall_tau_a_counts_pairs():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 4, 30).astype(float), rng.normal(size=30)  # ties in a
    conc = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i in range(30) for j in range(i + 1, 30))
    assert kendall_tau_a(a, b) == pytest.approx(conc / (30 * 29 / 2))
    c = rng.normal(size=30)  # no ties: tau-a equals scipy's tau-b
    assert kendall_tau_a(c, b) == pytest.approx(stats.kendalltau(c, b).statistic)
    X, Y = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    assert rsa(X, Y, compare="kendall") == pytest.approx(kendall_tau_a(rdm(X), rdm(Y)))


def test_crossval_rdm_is_unbiased_for_noise():
    rng = np.random.default_rng(3)
    c, per, d, sigma = 5, 40, 8, 2.0
    M = rng.normal(size=(c, d))
    lab = np.repeat(np.arange(c), per)
    iu = np.triu_indices(c, 1)
    true = np.sum((M[iu[0]] - M[iu[1]]) ** 2, axis=1)
    cv_err, plain_err = [], []
    for _ in range(40):  # independent noise draws: the bias shows in the mean error
        X = M[lab] + sigma * rng.normal(size=(len(lab), d))
        cv, cats = crossval_rdm(X, lab, np.arange(len(lab)), n_splits=4, seed=int(rng.integers(1000)))
        plain = rdm(np.vstack([X[lab == k].mean(0) for k in range(c)]), "euclidean") ** 2
        cv_err.append(np.mean(cv - true))
        plain_err.append(np.mean(plain - true))
    assert np.mean(plain_err) == pytest.approx(2 * d * sigma ** 2 / per, rel=0.3)  # noise inflates plain distances
    assert abs(np.mean(cv_err)) < 0.3 * 2 * d * sigma ** 2 / per
    assert list(cats) == list(range(c))


def test_rsa_bad_input():
    with pytest.raises(ObjalignError, match="at least 3 items"):
        rsa(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ObjalignError, match="NaN or infinite"):
        rsa(np.array([[1.0, np.nan], [1, 2], [3, 4]]), np.ones((3, 2)))
    with pytest.raises(ObjalignError, match="compare='cosine'"):
        compare_rdms(np.arange(3.0), np.arange(3.0), "cosine")
    with pytest.raises(ObjalignError, match="at least 3 categories"):
        crossval_rdm(np.ones((4, 2)), [0, 0, 1, 1], [0, 1, 2, 3])


# ------------------------------------------------------------------------------------------------ retrieval
def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_csls_equals_its_formula():
    rng = np.random.default_rng(4)
    P, C, k = rng.normal(size=(12, 5)), rng.normal(size=(20, 5)), 3
    S = _unit(P) @ _unit(C).T
    rT = np.array([np.sort(S[i])[-k:].mean() for i in range(12)])
    rS = np.array([np.sort(S[:, j])[-k:].mean() for j in range(20)])
    np.testing.assert_allclose(csls_scores(P, C, k), 2 * S - rT[:, None] - rS[None, :], atol=1e-12)
    t = rng.integers(0, 20, 12)
    score = (2 * S - rS[None, :])
    expected = [1 + np.sum(score[i] > score[i, t[i]]) for i in range(12)]
    np.testing.assert_array_equal(retrieval(P, C, t, method="csls", k=k), expected)
    nn = [1 + np.sum(S[i] > S[i, t[i]]) for i in range(12)]
    np.testing.assert_array_equal(retrieval(P, C, t, method="nn"), nn)


def test_csls_demotes_a_hub():
    rng = np.random.default_rng(6)
    C = _unit(rng.normal(size=(30, 10)))
    hub = _unit(C[:10].mean(0, keepdims=True))  # close to many queries
    cands = np.vstack([C, hub])
    P = C[:10] + 0.3 * rng.normal(size=(10, 10))
    t = np.arange(10)
    assert retrieval(P, cands, t, "csls", k=3).mean() <= retrieval(P, cands, t, "nn").mean()


def test_precision_at_k_and_candidate_index():
    assert precision_at_k([1, 2, 6, 40], ks=(1, 5, 30)) == {"p@1": 0.25, "p@5": 0.5, "p@30": 0.75}
    np.testing.assert_array_equal(candidate_index(["cat", "dog"], ["dog", "ant", "cat"]), [2, 0])
    with pytest.raises(ObjalignError, match="missing 1 true name.*'zebra'"):
        candidate_index(["cat", "zebra"], ["cat", "dog"])


def test_retrieval_bad_input():
    P, C = np.ones((3, 4)), np.eye(4)
    with pytest.raises(ObjalignError, match="k=5 is larger than the number of candidates \\(4\\)"):
        retrieval(P, C, [0, 1, 2], k=5)
    with pytest.raises(ObjalignError, match="NaN or infinite"):
        retrieval(np.full((3, 4), np.nan), C, [0, 1, 2])
    with pytest.raises(ObjalignError, match="true_index must lie in 0..3"):
        retrieval(P, C, [0, 1, 7], k=2)


def test_shipped_lvis_vocabulary():
    names = load_vocabulary("lvis")
    assert len(names) == 1203 and names[0] == "aerosol can" and "zucchini" in names
    assert all("_" not in n for n in names)


def test_user_vocabulary_file(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("# my names\nred_panda\n\nkettle\nkettle\n")
    assert load_vocabulary(str(f)) == ["red panda", "kettle"]
    with pytest.raises(ObjalignError, match="neither a shipped list"):
        load_vocabulary(str(tmp_path / "missing.txt"))


def test_rsa_calibration_equals_recomputed_null():
    from objalign.measures.calibrate import calibration_summary
    from objalign.evaluation.category_level import _rsa_calibrated
    from objalign.stats.permutation import group_permutations

    rng = np.random.default_rng(0)
    P = rng.normal(size=(12, 5))
    T = P @ rng.normal(size=(5, 7)) + rng.normal(size=(12, 7))
    fast = _rsa_calibrated(P, T, 200, 0.05, 3)
    null = [rsa(P, T[p]) for p in group_permutations(12, 200, seed=3)]
    slow = calibration_summary(rsa(P, T), null, 0.05)
    for k in ("score", "threshold", "pvalue", "calibrated", "null_mean"):
        assert fast[k] == pytest.approx(slow[k], abs=1e-12)

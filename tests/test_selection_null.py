"""The selection-inclusive permutation null (``align.null: selection``): the CV search repeated per permutation.

Checked against the estimators refitted from scratch on every permuted pairing, for calibration (uniform p-values
when vision and text are unrelated), and for its bad-input errors.
"""

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.model_selection import GroupKFold
from test_evaluate_nulls import _problem as _nulls_problem

from objalign.config import AlignConfig, load_config
from objalign.errors import ObjalignError
from objalign.maps import KernelRidgeCV, RidgeCV
from objalign.maps._permuted_cv import kernel_choices, ridge_choices
from objalign.maps._splits import resolve_splits
from objalign.stats import nulls, permutation
from objalign.stats.metrics import summarize
from objalign.stats.nulls import selection_smoothers, smoother_null
from objalign.stats.permutation import block_permutations, pvalues


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Tiny problems: a BLAS thread team only adds synchronisation (and stalls on a shared machine)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


ALPHAS = np.array([1e-3, 1e-1, 1.0, 10.0, 1000.0])
GAMMAS = np.array([0.02, 0.1, 0.5])


def _problem(n=150, m=40, d=10, q=16, c=8, seed=0, signal=1.0):
    """test_evaluate_nulls' problem (category-centred Gaussian features, ~3 objects per image), a little larger."""
    return _nulls_problem(n=n, m=m, d=d, q=q, c=c, seed=seed, signal=signal)


def _cv_table(model):
    return np.column_stack([model.cv_results_[f"split{k}_test_score"] for k in range(model.n_splits_)])


def test_fast_cv_scores_and_choices_equal_the_estimators_on_every_permutation():
    Xtr, _, lab, _, E, g = _problem()
    present, codes = np.unique(lab, return_inverse=True)
    cv = GroupKFold(5)
    splits = resolve_splits(cv, Xtr, None, g, len(Xtr))
    perms = block_permutations(g, 4, seed=3, block=0)
    best_r, sc_r = ridge_choices(Xtr, codes, E[present], splits, ALPHAS, perms, return_scores=True)
    best_k, sc_k = kernel_choices(Xtr, codes, E[present], splits, ALPHAS, GAMMAS, perms, n_jobs=2,
                                  return_scores=True)
    for b, pi in enumerate(perms):
        Y = E[lab[pi]]
        ridge = RidgeCV(alphas=ALPHAS, cv=cv).fit(Xtr, Y, groups=g)
        krr = KernelRidgeCV(alphas=ALPHAS, gammas=GAMMAS, cv=cv).fit(Xtr, Y, groups=g)
        np.testing.assert_allclose(sc_r[b], _cv_table(ridge), atol=1e-8, rtol=0)
        np.testing.assert_allclose(sc_k[b], _cv_table(krr), atol=1e-8, rtol=0)
        assert best_r[b] == ridge.best_index_ and best_k[b] == krr.best_index_


def test_shared_weight_cache_gives_the_same_scores_and_reuses_rows():
    from objalign.maps._permuted_cv import WeightCache

    Xtr, _, lab, _, E, g = _problem()
    E2 = E + np.random.default_rng(1).normal(size=E.shape)  # a second target set
    E2[:, 0] += 1e4  # a large common offset (transformer outlier dimension): the totals must not cancel
    present, codes = np.unique(lab, return_inverse=True)
    cv = GroupKFold(5)
    splits = resolve_splits(cv, Xtr, None, g, len(Xtr))
    perms = block_permutations(g, 6, seed=3, block=0)
    Zs = [E[present], E2[present]]
    cache = WeightCache()
    best_r, sc_r = ridge_choices(Xtr, codes, Zs, splits, ALPHAS, perms, return_scores=True, cache=cache)
    stored = len(cache.rows)
    sub = np.vstack([perms[[0, 2, 5]], block_permutations(g, 1, seed=99, block=0)])  # three seen rows, one new
    best_k, sc_k = kernel_choices(Xtr, codes, Zs, splits, ALPHAS, GAMMAS, sub, return_scores=True, cache=cache)
    assert stored == 6 and len(cache.rows) == 7  # only the new row's weights were computed
    ref_r = ridge_choices(Xtr, codes, Zs, splits, ALPHAS, perms, return_scores=True)
    ref_k = kernel_choices(Xtr, codes, Zs, splits, ALPHAS, GAMMAS, sub, return_scores=True)
    for j in range(2):  # (a row computed in another batch may differ in the last bit: BLAS blocks by batch size)
        np.testing.assert_array_equal(best_r[j], ref_r[0][j])
        np.testing.assert_array_equal(sc_r[j], ref_r[1][j])
        np.testing.assert_array_equal(best_k[j], ref_k[0][j])
        np.testing.assert_allclose(sc_k[j], ref_k[1][j], rtol=1e-11, atol=1e-12)
    for b, pi in enumerate(sub):  # and they are scikit-learn's, offset dimension included
        krr = KernelRidgeCV(alphas=ALPHAS, gammas=GAMMAS, cv=cv).fit(Xtr, E2[lab[pi]], groups=g)
        np.testing.assert_allclose(sc_k[1][b], _cv_table(krr), atol=1e-8, rtol=1e-10)
        assert best_k[1][b] == krr.best_index_
    for b, pi in enumerate(perms):
        ridge = RidgeCV(alphas=ALPHAS, cv=cv).fit(Xtr, E2[lab[pi]], groups=g)
        np.testing.assert_allclose(sc_r[1][b], _cv_table(ridge), atol=1e-8, rtol=1e-10)


@pytest.mark.parametrize("method", ["ridge", "kernel_ridge"])
def test_selection_null_scores_equal_from_scratch_refits_per_permutation(method):
    """Every null figure of every permutation equals RidgeCV / KernelRidgeCV refitted on that permutation."""
    Xtr, Xte, lab_tr, lab_te, E, g = _problem(seed=1, signal=0.7)
    B = 6
    sel = selection_smoothers(method, Xtr, Xte, lab_tr, g, E, cv_folds=5, alphas=ALPHAS,
                              gammas=GAMMAS if method == "kernel_ridge" else None, n_permutations=B, seed=11)
    block = {"S": sel["S"], "choice": sel["choice"], "train_labels": lab_tr, "train_groups": g,
             "test_labels": lab_te}
    null = smoother_null([block], E, B, seed=11)
    cv = GroupKFold(5)
    for b, pi in enumerate(block_permutations(g, B, 11, 0)):
        Y = E[lab_tr[pi]]
        est = (RidgeCV(alphas=ALPHAS, cv=cv) if method == "ridge"
               else KernelRidgeCV(alphas=ALPHAS, gammas=GAMMAS, cv=cv)).fit(Xtr, Y, groups=g)
        assert sel["choice"][b] == est.best_index_
        want, _ = summarize(est.predict(Xte), E[lab_te], lab_te, E)
        assert set(null) <= set(want)
        for k in null:
            v = want[k]
            assert null[k][b] == pytest.approx(v, rel=1e-8, abs=1e-8), (k, b)


def test_selected_hyperparameters_vary_over_permutations_where_fixed_would_not():
    """The null is not the fixed one in disguise: the search picks other grid points on permuted pairings."""
    Xtr, Xte, lab_tr, _, E, g = _problem(seed=2, signal=3.0)
    real = RidgeCV(alphas=ALPHAS, cv=GroupKFold(5)).fit(Xtr, E[lab_tr], groups=g).best_index_
    sel = selection_smoothers("ridge", Xtr, Xte, lab_tr, g, E, cv_folds=5, alphas=ALPHAS, n_permutations=20)
    assert (sel["choice"] != real).any()


def _pvalue_no_relation(method, rep, B=39):
    """One data set with independent Gaussian vision and text (30 categories); p-value of R² and top-1."""
    rng = np.random.default_rng(1000 + rep)
    c, d, q, n, m = 30, 8, 12, 90, 40
    E = rng.normal(size=(c, q))
    lab_tr, lab_te = rng.integers(0, c, n), rng.integers(0, c, m)
    Xtr, Xte = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    g = np.arange(n) // 2  # two objects per image
    cv = GroupKFold(3)
    gammas = np.array([0.05, 0.2])
    est = RidgeCV(alphas=ALPHAS, cv=cv) if method == "ridge" else KernelRidgeCV(alphas=ALPHAS, gammas=gammas, cv=cv)
    est.fit(Xtr, E[lab_tr], groups=g)
    observed, _ = summarize(est.predict(Xte), E[lab_te], lab_te, E)
    sel = selection_smoothers(method, Xtr, Xte, lab_tr, g, E, cv_folds=3, alphas=ALPHAS,
                              gammas=gammas if method == "kernel_ridge" else None, n_permutations=B, seed=rep)
    block = {"S": sel["S"], "choice": sel["choice"], "train_labels": lab_tr, "train_groups": g,
             "test_labels": lab_te}
    return pvalues(observed, smoother_null([block], E, B, seed=rep))["r2"]


@pytest.mark.parametrize("method,reps", [("ridge", 200), ("kernel_ridge", 100)])
def test_selection_pvalues_are_uniform_when_vision_and_text_are_unrelated(method, reps):
    """With B = 39, P(p <= 0.05) = 2/40 exactly for a valid test: the rejection count must lie in its binomial
    band (two-sided 0.999), and the p-values must spread over [0, 1] like a uniform's deciles."""
    p = np.array([_pvalue_no_relation(method, r) for r in range(reps)])
    lo, hi = binom.ppf(0.0005, reps, 0.05), binom.isf(0.0005, reps, 0.05)
    assert lo <= np.sum(p <= 0.05) <= hi
    lo_m, hi_m = binom.ppf(0.0005, reps, 0.5), binom.isf(0.0005, reps, 0.5)
    assert lo_m <= np.sum(p <= 0.5) <= hi_m


def test_too_few_images_for_the_folds_fails_before_any_permutation(monkeypatch):
    Xtr, Xte, lab_tr, _, E, _ = _problem(n=30)
    g = np.arange(30) % 3  # three images, five folds

    def no_permutations(*a, **k):
        raise AssertionError("a permutation was drawn before the fold check")

    monkeypatch.setattr(nulls, "block_permutations", no_permutations)
    with pytest.raises(ObjalignError, match=r"align.cv_folds = 5 but the training split has only 3 images"):
        selection_smoothers("ridge", Xtr, Xte, lab_tr, g, E, cv_folds=5, alphas=ALPHAS, n_permutations=100)


def test_stage_raises_the_real_fits_error_before_any_permutation(monkeypatch):
    from objalign.evaluation.engine import evaluate

    rng = np.random.default_rng(0)
    n = 40
    X, E = rng.normal(size=(n, 6)), rng.normal(size=(4, 8))
    lab, g = rng.integers(0, 4, n), np.arange(n) % 4  # 4 images: ~3 in training, 5 CV folds
    from objalign.evaluation import folds

    for where in (nulls, folds):  # the nulls' and the shared fold fits' permutations
        monkeypatch.setattr(where, "block_permutations", lambda *a, **k: pytest.fail("permutation drawn"))
    cfg = AlignConfig(protocols=("heldout_images",), n_bootstrap=0, n_permutations=100, cv_folds=5)
    with pytest.raises(ObjalignError, match=r"align.cv_folds = 5 but the training split has only \d images"):
        evaluate(X, E[lab], g, lab, E, cfg)


def test_unknown_null_is_one_line_with_did_you_mean():
    from objalign.evaluation.engine import methods_of

    for check in (lambda: load_config(None, ["align.null=selecton"]),  # refused at load, before any stage
                  lambda: methods_of(replace(AlignConfig(), null="selecton"))):  # and by the library's own check
        with pytest.raises(ObjalignError, match=r"align.null = 'selecton'.*did you mean 'selection'") as err:
            check()
        assert "\n" not in str(err.value)
    assert AlignConfig().null == "selection"
    methods_of(replace(AlignConfig(), null="fixed"))


def test_fewer_kernel_permutations_only_beyond_the_stated_size():
    assert permutation.selection_permutations(1000, 4000, 4000) == (1000, None)
    b, why = permutation.selection_permutations(1000, 8000, 4000)
    assert b == 250 and "null_selection_max_train = 4000" in why
    assert permutation.selection_permutations(1000, 40000, 4000)[0] == 100


def test_stage_rows_name_their_null_and_the_report_says_it():
    from objalign.evaluation.engine import evaluate
    from objalign.report.html import results_table

    Xtr, Xte, lab_tr, lab_te, E, g = _problem(n=120, m=0, seed=4)
    cfg = AlignConfig(protocols=("heldout_images",), baselines=(), n_bootstrap=0, n_permutations=100, cv_folds=3,
                      common_dim=8, alphas=(0.1, 10.0), gammas=(0.5, 1.0))
    for kind in ("selection", "fixed"):
        rows = evaluate(Xtr, E[lab_tr], g, lab_tr, E, replace(cfg, null=kind))["rows"]
        assert [r["null"]["kind"] for r in rows] == [kind, kind]
        assert all(r["null"]["n_permutations"] == 100 and set(r["pvalue"]) >= {"r2", "top1"} for r in rows)
        html = results_table(rows, "heldout_images")
        assert f"{kind} null, B = 100" in html


def test_yaml_null_key_is_align_null(tmp_path):
    """YAML reads a bare ``null:`` key as None; ``align: {null: fixed}`` must still set align.null."""
    path = tmp_path / "c.yaml"
    path.write_text("align:\n  null: fixed\n  n_permutations: 200\n")
    cfg = load_config(path)
    assert cfg.align.null == "fixed" and cfg.align.n_permutations == 200
    assert load_config(None, ["align.null=fixed"]).align.null == "fixed"

"""Bad input: one clear ValueError naming the array or parameter, raised before any heavy computation."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import GroupKFold

import objalign.maps.kernel as kernel_mod
import objalign.maps.linear as linear_mod
from objalign.maps import KernelRidge, KernelRidgeCV, PCAMatch, Procrustes, Ridge, RidgeCV, check_grid, check_xy
from objalign.errors import ObjalignError


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if an estimator reaches its kernel or moment computation."""

    def boom(*a, **k):
        raise AssertionError("heavy computation started before input validation")

    monkeypatch.setattr(kernel_mod, "KernelBase", boom)
    monkeypatch.setattr(kernel_mod, "kernel_matrix", boom)
    monkeypatch.setattr(linear_mod, "_block_moments", boom)
    monkeypatch.setattr(linear_mod, "solve_ridge", boom)


def _xy(n=30, dx=4, dy=3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, dx)), rng.standard_normal((n, dy))


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300
    return msg


ESTIMATORS = [RidgeCV, KernelRidgeCV, Ridge, KernelRidge, Procrustes]


@pytest.mark.parametrize("Est", ESTIMATORS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_array(Est, bad, no_heavy_work):
    X, Y = _xy()
    Xb = X.copy()
    Xb[3, 1] = bad
    with pytest.raises(ValueError) as e:
        Est().fit(Xb, Y)
    msg = _one_line(e)
    assert msg.startswith("X contains NaN or infinite") and "row 3, column 1" in msg
    Yb = Y.copy()
    Yb[5, 0] = bad
    with pytest.raises(ObjalignError, match=r"^y contains NaN or infinite values \(first at row 5, column 0\)"):
        Est().fit(X, Yb)


@pytest.mark.parametrize("Est", ESTIMATORS)
def test_mismatched_rows(Est, no_heavy_work):
    X, Y = _xy()
    with pytest.raises(ObjalignError, match=r"^X has 30 rows but y has 29; expected one y row per X row") as e:
        Est().fit(X, Y[:-1])
    _one_line(e)


@pytest.mark.parametrize("Est", [RidgeCV, KernelRidgeCV])
def test_fewer_samples_than_folds(Est, no_heavy_work):
    X, Y = _xy(n=4)
    with pytest.raises(ObjalignError, match=r"cannot make 5 folds from n_samples=4"):
        Est(cv=5).fit(X, Y)
    groups = np.array([0, 0, 1, 1])
    with pytest.raises(ObjalignError, match=r"groups has 2 distinct labels but cv asks for 3 folds"):
        check_xy(X, Y, groups=groups, n_splits=3)
    with pytest.raises(ObjalignError, match=r"groups has shape \(3,\); expected one group label per sample"):
        Est(cv=GroupKFold(2)).fit(X, Y, groups=groups[:3])


@pytest.mark.parametrize(
    "est,match",
    [
        (RidgeCV(alphas=[1.0, -1.0]), r"^alphas contains -1\.0; expected finite values > 0$"),
        (RidgeCV(alphas=[]), r"^alphas is empty"),
        (RidgeCV(alphas=[1.0, np.nan]), r"^alphas contains nan"),
        (RidgeCV(cv=1), r"^cv=1; expected at least 2 folds"),
        (KernelRidgeCV(alphas=[0.0]), r"^alphas contains 0\.0; expected finite values > 0"),
        (KernelRidgeCV(gammas=[0.1, 0.0]), r"^gammas contains 0\.0; expected finite values > 0"),
        (KernelRidgeCV(gammas=[1.0], kernel="linear"), r"kernel='linear' has no gamma; expected gammas=None"),
        (KernelRidgeCV(kernel="sigmoidal"), r"^kernel='sigmoidal' is not supported; expected one of"),
        (KernelRidgeCV(approx="fast"), r"^approx='fast'; expected one of auto, exact, nystroem"),
        (KernelRidgeCV(n_components=0), r"^n_components=0; expected a value > 0"),
        (KernelRidge(alpha=-2.0), r"^alpha=-2\.0; expected a value > 0"),
        (KernelRidge(kernel="rbf", gamma=-1.0), r"^gamma=-1\.0; expected a value > 0"),
        (Ridge(alpha=-0.5), r"^alpha=-0\.5; expected a value >= 0"),
        (Procrustes(n_components=9), r"^n_components=9; expected at most min\(n_features=4, n_targets=3"),
    ],
)
def test_grid_and_parameter_values_out_of_range(est, match, no_heavy_work):
    X, Y = _xy()
    with pytest.raises(ObjalignError, match=match) as e:
        est.fit(X, Y)
    _one_line(e)


def test_pca_match_too_many_components():
    X, _ = _xy(n=5, dx=8)
    with pytest.raises(ObjalignError, match=r"^n_components=6 but X has shape \(5, 8\); expected n_components <= "):
        PCAMatch(n_components=6).fit(X)


def test_empty_category():
    X, Y = _xy(n=6)
    cats = np.array([1, 1, 2, 2, 5, 5])
    check_xy(X, Y, categories=cats, category_ids=[1, 2, 5])
    with pytest.raises(ObjalignError, match=r"^category 3 has no instances \(1 empty category in all\)") as e:
        check_xy(X, Y, categories=cats, category_ids=[1, 2, 3, 5])
    _one_line(e)


def test_shapes_dtypes_and_sparse():
    X, Y = _xy()
    with pytest.raises(ObjalignError, match=r"^X has shape \(30,\); expected a 2-D"):
        check_xy(X[:, 0], Y)
    with pytest.raises(ObjalignError, match=r"^vision has dtype <U1; expected real numbers"):
        check_xy(np.full((30, 2), "a"), Y, name_x="vision")
    with pytest.raises(ObjalignError, match=r"sparse input is not supported: pass X\.toarray\(\)"):
        check_xy(sp.csr_matrix(X), Y)
    with pytest.raises(ObjalignError, match=r"^text has 0 feature\(s\)"):
        check_xy(X, np.zeros((30, 0)), name_y="text")
    Xc, Yc, g = check_xy(X.astype(np.float32), Y.astype(int))
    assert Xc.dtype == np.float32 and Yc.dtype == np.float64 and g is None


def test_check_grid():
    np.testing.assert_array_equal(check_grid(0.5, "alphas"), [0.5])
    with pytest.raises(ObjalignError, match=r"^alphas='big' is not a list of numbers"):
        check_grid("big", "alphas")
    with pytest.raises(ObjalignError, match=r"^gammas contains inf"):
        check_grid([1.0, np.inf], "gammas")

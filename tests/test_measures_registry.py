"""Tests for objalign.measures.registry: measure IDs, their callables, options and the calibration by ID."""

import numpy as np
import pytest

from objalign import measures
from objalign.errors import ObjalignError
from objalign.measures import similarity as sim
from objalign.measures.calibrate import MEASURES, calibrated
from objalign.measures.registry import Measure, get, list_measures
from objalign.stats.permutation import group_permutations

# ID -> (the existing call it stands for, the options documented for it)
EXISTING = {
    "cka_linear": (lambda X, Y, **o: sim.cka(X, Y, **o), {}),
    "cka_linear_unbiased": (lambda X, Y, **o: sim.cka(X, Y, unbiased=True, **o), {}),
    "cka_rbf": (lambda X, Y, **o: sim.cka(X, Y, kernel="rbf", **o), {"sigma": 0.8}),
    "cka_rbf_unbiased": (lambda X, Y, **o: sim.cka(X, Y, kernel="rbf", unbiased=True, **o), {"sigma": 0.8}),
    "mutual_knn": (sim.mutual_knn, {"k": 10, "ties": "average"}),
    "cknna": (sim.cknna, {"k": 10, "ties": "average"}),
    "svcca": (sim.svcca, {"dim": 10}),
}
# options other than the defaults, for each ID
OTHER = {"cka_rbf": {"sigma": 0.4}, "cka_rbf_unbiased": {"sigma": 0.4}, "mutual_knn": {"k": 5, "ties": "index"},
         "cknna": {"k": 5, "ties": "index"}, "svcca": {"dim": 3}}


def _data(seed=0, n=48, repeat=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12))
    if repeat:  # text targets: one row per category
        Y = rng.normal(size=(16, 12))[rng.integers(0, 16, n)]
    else:
        Y = X[:, :6] @ rng.normal(size=(6, 12)) + rng.normal(size=(n, 12))
    return X, Y, np.repeat(np.arange(n // 4), 4)


def test_list_gives_every_id_in_registration_order():
    assert measures.list() == list_measures() == list(EXISTING)
    assert set(MEASURES) <= set(measures.list())  # every fast engine has an ID
    assert measures.get is get and measures.Measure is Measure


@pytest.mark.parametrize("repeat", [False, True])
@pytest.mark.parametrize("measure_id", list(EXISTING))
def test_every_callable_equals_the_existing_function(measure_id, repeat):
    X, Y, _ = _data(1, repeat=repeat)
    f, _ = EXISTING[measure_id]
    m = get(measure_id)
    assert m.id == measure_id
    assert m(X, Y) == m.function(X, Y) == f(X, Y)
    assert m(X, Y, cache={}) == f(X, Y)
    other = OTHER.get(measure_id, {})
    assert m(X, Y, **other) == f(X, Y, **other)


@pytest.mark.parametrize("measure_id", list(EXISTING))
def test_options_and_defaults_are_as_documented(measure_id):
    m = get(measure_id)
    _, documented = EXISTING[measure_id]
    assert dict(m.options) == documented
    X, Y, _ = _data(2)
    assert m(X, Y, **documented) == m(X, Y)  # the listed defaults are the defaults
    with pytest.raises(TypeError):
        m.options["extra"] = 1  # read-only
    with pytest.raises(TypeError):
        m(X, Y, bogus=1)
    for text in (m.reference, m.description):
        assert isinstance(text, str) and text and "\n" not in text


def test_unknown_id_suggests_the_closest_one():
    with pytest.raises(ObjalignError, match="unknown similarity measure 'cka_lineer'; did you mean 'cka_linear'"):
        get("cka_lineer")
    with pytest.raises(ObjalignError, match="expected one of cka_linear, "):
        get("nothing_like_it")
    with pytest.raises(ObjalignError, match="unknown similarity measure"):
        get(["not", "hashable"])
    X, Y, _ = _data()
    with pytest.raises(ObjalignError, match="did you mean 'mutual_knn'.* or a callable"):
        calibrated("mutual_kn", X, Y, n_permutations=5)


@pytest.mark.parametrize("repeat", [False, True])
@pytest.mark.parametrize("measure_id", list(MEASURES))
def test_calibrated_by_id_equals_the_engine_call(measure_id, repeat):
    """The ID goes through the registry to the same fast engine: the same numbers, bit for bit."""
    X, Y, groups = _data(3, repeat=repeat)
    options = {"mutual_knn": {"k": 5}, "cknna": {"k": 5}, "svcca": {"dim": 3}}.get(measure_id, {})
    r = measures.calibrated(measure_id, X, Y, groups, n_permutations=40, alpha=0.1, seed=4, **options)
    engine = MEASURES[measure_id](X, Y, **options)
    np.testing.assert_array_equal(r["null"], engine.scores(group_permutations(groups, 40, seed=4)))
    assert r["score"] == engine.score() and r["measure"] == measure_id


def test_calibrated_by_id_without_an_engine_recomputes_the_registered_callable():
    X, Y, groups = _data(5)
    by_id = calibrated("cka_rbf_unbiased", X, Y, groups, n_permutations=30, seed=2, sigma=0.4)
    old = calibrated(lambda a, b: sim.cka(a, b, kernel="rbf", unbiased=True, sigma=0.4), X, Y, groups,
                     n_permutations=30, seed=2)
    np.testing.assert_array_equal(by_id.pop("null"), old.pop("null"))
    assert by_id.pop("measure") == "cka_rbf_unbiased"
    old.pop("measure")
    assert by_id == old
    with pytest.raises(ObjalignError, match="bad options"):
        calibrated("cka_rbf_unbiased", X, Y, n_permutations=5, k=3)

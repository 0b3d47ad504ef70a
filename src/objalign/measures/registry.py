"""A registry of similarity measure IDs: each ID names one measure with fixed settings, its callable, reference,
options (with their defaults) and a one-line description.

IDs are what configurations, results and :func:`objalign.measures.calibrated` call a measure by (as the
similarity-repository's measure IDs and lm-eval's task registry do); ``objalign.measures.list()`` gives them and
``objalign.measures.get(id)`` the :class:`Measure`. An ID's callable is ``f(X, Y, **options) -> float`` on paired
feature matrices ``X`` ``(n_samples, n_features_x)`` and ``Y`` ``(n_samples, n_features_y)``; it calls the measure of
:mod:`objalign.measures.similarity` with the ID's settings (e.g. ``cka_rbf`` is ``cka(X, Y, kernel="rbf")``), so its
value is that function's, bit for bit. Every callable also takes ``cache`` (see "Sharing work across calls" in
:mod:`objalign.measures.similarity`), which is not listed among the options: it never changes a value.

:func:`~objalign.measures.similarity.hsic` is not an ID: it takes two Gram matrices, not two feature matrices.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from objalign.errors import ObjalignError, did_you_mean
from objalign.measures.similarity import cka, cknna, mutual_knn, svcca

__all__ = ["Measure", "get", "list_measures"]

_KORNBLITH = 'Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", ICML'
_SONG = 'unbiased HSIC: Song et al. 2012, "Feature Selection via Dependence Maximization", JMLR 13'
_HUH = 'Huh et al. 2024, "The Platonic Representation Hypothesis", ICML'
_RAGHU = 'Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis", NeurIPS'


@dataclass(frozen=True)
class Measure:
    """One registered similarity measure.

    Attributes
    ----------
    id : str
        The measure's ID, e.g. ``"cka_linear"``.
    function : callable
        ``f(X, Y, **options) -> float`` with ``X`` ``(n_samples, n_features_x)`` and ``Y``
        ``(n_samples, n_features_y)`` paired by row; also takes ``cache=`` (a dict, never changes the value).
    reference : str
        The paper that defines the measure.
    options : mapping
        Option name -> default value (read-only), the keyword arguments ``function`` takes besides ``cache``.
    description : str
        One line.

    Examples
    --------
    >>> import numpy as np
    >>> from objalign import measures
    >>> m = measures.get("svcca")
    >>> dict(m.options)
    {'dim': 10}
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(30, 6))
    >>> Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    >>> round(m(X, X @ Q, dim=3), 3)  # a rotation of X: the same top singular subspace
    1.0
    """

    id: str
    function: Callable[..., float]
    reference: str
    options: Mapping[str, object]
    description: str

    def __call__(self, X, Y, **options) -> float:
        """``function(X, Y, **options)``: the measure on ``X`` ``(n, d_x)`` and ``Y`` ``(n, d_y)``, a float."""
        return self.function(X, Y, **options)


def _cka_linear(X, Y, cache: dict | None = None) -> float:
    return cka(X, Y, kernel="linear", unbiased=False, cache=cache)


def _cka_linear_unbiased(X, Y, cache: dict | None = None) -> float:
    return cka(X, Y, kernel="linear", unbiased=True, cache=cache)


def _cka_rbf(X, Y, sigma: float = 0.8, cache: dict | None = None) -> float:
    return cka(X, Y, kernel="rbf", unbiased=False, sigma=sigma, cache=cache)


def _cka_rbf_unbiased(X, Y, sigma: float = 0.8, cache: dict | None = None) -> float:
    return cka(X, Y, kernel="rbf", unbiased=True, sigma=sigma, cache=cache)


def _options(function: Callable) -> Mapping[str, object]:
    """The keyword options of ``function`` ``f(X, Y, ..., cache=None)`` with their defaults (read from its signature,
    so they cannot drift from the code)."""
    params = list(inspect.signature(function).parameters.values())[2:]
    return MappingProxyType({p.name: p.default for p in params if p.name != "cache"})


def _measure(id: str, function: Callable, reference: str, description: str) -> Measure:
    return Measure(id, function, reference, _options(function), description)


_REGISTRY: dict[str, Measure] = {m.id: m for m in (
    _measure("cka_linear", _cka_linear, _KORNBLITH, "linear CKA, biased HSIC: cka(X, Y)"),
    _measure("cka_linear_unbiased", _cka_linear_unbiased, f"{_KORNBLITH}; {_SONG}",
             "linear CKA, unbiased HSIC (near 0 for independent data): cka(X, Y, unbiased=True)"),
    _measure("cka_rbf", _cka_rbf, _KORNBLITH,
             "RBF CKA, bandwidth sigma times the median pairwise distance: cka(X, Y, kernel='rbf')"),
    _measure("cka_rbf_unbiased", _cka_rbf_unbiased, f"{_KORNBLITH}; {_SONG}",
             "RBF CKA with the unbiased HSIC: cka(X, Y, kernel='rbf', unbiased=True)"),
    _measure("mutual_knn", mutual_knn, _HUH, "mean overlap of the k nearest neighbours (cosine) in X and in Y"),
    _measure("cknna", cknna, _HUH, "CKA restricted to pairs that are k nearest neighbours in both spaces"),
    _measure("svcca", svcca, _RAGHU, "mean canonical correlation of the top dim singular directions of X and of Y"),
)}


def list_measures() -> list[str]:
    """The registered measure IDs (exported as ``objalign.measures.list``).

    Returns
    -------
    list of str
        The IDs, in registration order.

    Examples
    --------
    >>> from objalign import measures
    >>> measures.list()
    ['cka_linear', 'cka_linear_unbiased', 'cka_rbf', 'cka_rbf_unbiased', 'mutual_knn', 'cknna', 'svcca']
    """
    return [*_REGISTRY]


def get(measure_id: str) -> Measure:
    """The :class:`Measure` registered under ``measure_id``.

    Parameters
    ----------
    measure_id : str
        A measure ID of :func:`list_measures`.

    Returns
    -------
    Measure
        Its callable ``f(X, Y, **options) -> float``, reference, options with defaults and description.

    Raises
    ------
    ObjalignError
        ``measure_id`` is not registered (the message suggests the closest ID).

    Examples
    --------
    >>> import numpy as np
    >>> from objalign import measures
    >>> m = measures.get("mutual_knn")
    >>> dict(m.options)
    {'k': 10, 'ties': 'average'}
    >>> m.reference
    'Huh et al. 2024, "The Platonic Representation Hypothesis", ICML'
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 5))
    >>> Y = X @ rng.normal(size=(5, 3)) + 0.1 * rng.normal(size=(40, 3))
    >>> m(X, Y, k=5) == measures.mutual_knn(X, Y, k=5)
    True
    >>> measures.get("mutual_kn")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    objalign.errors.ObjalignError: unknown similarity measure 'mutual_kn'; did you mean 'mutual_knn'?; expected ...
    """
    try:
        return _REGISTRY[measure_id]
    except (KeyError, TypeError):
        hint = did_you_mean(measure_id, _REGISTRY)
        raise ObjalignError(f"unknown similarity measure {measure_id!r}{hint}; expected one of {', '.join(_REGISTRY)}"
                            ) from None

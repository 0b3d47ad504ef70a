"""Permutation nulls for maps that are linear smoothers (ridge, kernel ridge with fixed hyperparameters).

The null hypothesis is "the map learned nothing that transfers from vision to language": the pairing of
training images with their labels is shuffled (whole images exchange their label blocks, see
:func:`objalign.stats.permutation.group_permutations`), the map is re-fitted with the **same hyperparameters**
(those chosen by cross-validation on the real pairing; re-running the search per permutation would cost
B times the search) and scored on the untouched test pairing. PCA is fitted on vision features alone and
does not depend on the pairing, so it is shared.

Why it is cheap. Ridge (with intercept) and kernel ridge predict ``S @ Y_train`` with an operator
``S`` of shape ``(n_test, n_train)`` that does not depend on the targets (a linear smoother). ``S`` is
obtained through the estimators' public API by fitting them on the identity targets ``I_{n_train}``
(:func:`smoother_operator`). Text targets are one embedding per category, ``Y_train = onehot(c) E``, so a
permuted refit predicts ``C E`` with ``C = S onehot(c[pi])`` of shape ``(n_test, n_categories)`` (sums of
columns of ``S`` per permuted label), and every figure follows from ``C`` and the category Gram matrix
``E E^T`` without forming the predictions (:class:`CategoryScorer`). One permutation costs
``O(n_test (n_train + n_categories^2))``.

Two nulls (``align.null``). ``fixed`` refits with the hyperparameters chosen on the real pairing. ``selection``
(the default) repeats the whole fitting procedure under every permutation: the grouped CV search picks its own
alpha (and gamma) on the permuted pairing (:func:`selection_smoothers`, fast through
:mod:`objalign.maps._permuted_cv`), and the permutation is scored with the smoother of the map it selected.
The real score also had its hyperparameters chosen on its own data, so only this null makes observed and
null scores exchangeable under the null hypothesis.

How the pairings are permuted and the p-values against these nulls are :mod:`objalign.stats.permutation`.
"""

from __future__ import annotations

import numpy as np

from objalign.errors import ObjalignError, did_you_mean
from objalign.maps import (
    KernelRidgeCV,
    RidgeCV,
    indicator,
    kernel_choices,
    kernel_matrix,
    param_grid,
    resolve_splits,
    ridge_choices,
    solve_kernel,
    solve_spd,
)
from objalign.maps.threads import single_threaded_blas
from objalign.stats.metrics import CONSTANT_DIM_RTOL
from objalign.stats.permutation import block_permutations


def smoother_operator(estimator, X_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """The linear-smoother operator of ``estimator`` (predictions = ``S @ Y_train`` for any targets).

    Parameters
    ----------
    estimator : unfitted scikit-learn-style regressor whose predictions are linear in its targets
        (e.g. ``Ridge(alpha)`` with or without intercept, exact ``KernelRidge(alpha, gamma)``).
    X_train : (n_train, d)
    X_test : (n_test, d)

    Returns
    -------
    S : (n_test, n_train)
        ``estimator.fit(X_train, I).predict(X_test)``: column ``j`` is the prediction for targets that are
        1 on training row ``j`` and 0 elsewhere. With an intercept, rows of ``S`` sum to 1.
    """
    from sklearn.base import clone

    n = len(X_train)
    return np.asarray(clone(estimator).fit(X_train, np.eye(n)).predict(X_test), dtype=np.float64)


class FastSmoothers:
    """Smoother operators of ridge (with intercept) and exact kernel ridge on one fold, from their closed forms.

    The same operators as :func:`smoother_operator` with :class:`~objalign.maps.Ridge` and exact
    :class:`~objalign.maps.KernelRidge` (equal up to rounding; tested), without fitting on the ``n_train``
    identity targets: ridge's is ``(X_te - m) (X_c' X_c + alpha I)^-1 X_c' + 1/n`` (one ``p x p`` solve with
    ``n_test`` right-hand sides; ``X_c' X_c`` is shared by every alpha) and kernel ridge's is
    ``K_te (K + alpha I)^-1`` (one Cholesky solve with ``n_test`` right-hand sides; the kernel matrices of the
    last gamma are kept for its other alphas). Computed in float64.

    Parameters
    ----------
    X_train : (n_train, d); X_test : (n_test, d)
    """

    def __init__(self, X_train: np.ndarray, X_test: np.ndarray):
        self.Xtr = np.asarray(X_train, dtype=np.float64)
        self.Xte = np.asarray(X_test, dtype=np.float64)
        self._ridge = None
        self._kernel = (None, None, None)

    def ridge(self, alpha: float) -> np.ndarray:
        """(n_test, n_train) operator of ``Ridge(alpha)`` (with intercept)."""

        if self._ridge is None:
            mx = self.Xtr.mean(axis=0)
            Xc, Tc = self.Xtr - mx, self.Xte - mx
            primal = Xc.shape[1] <= Xc.shape[0]
            self._ridge = (Xc, Tc, Xc.T @ Xc if primal else Xc @ Xc.T, primal)
        Xc, Tc, G, primal = self._ridge
        n = len(Xc)
        if primal:  # (Tc (G + aI)^-1) Xc' = ((G + aI)^-1 Tc')' Xc'
            S = solve_spd(G, float(alpha), Tc.T).T @ Xc.T
        else:  # dual: Tc Xc' (Xc Xc' + aI)^-1 (the centred identity targets' mean column drops out)
            S = solve_spd(G, float(alpha), Xc @ Tc.T).T
        S += 1.0 / n
        return S

    def kernel_ridge(self, alpha: float, gamma: float, kernel: str = "rbf") -> np.ndarray:
        """(n_test, n_train) operator of exact ``KernelRidge(alpha, kernel, gamma)``."""

        if self._kernel[0] != (kernel, float(gamma)):
            K = kernel_matrix(self.Xtr, kernel=kernel, gamma=float(gamma))
            Kte = kernel_matrix(self.Xte, self.Xtr, kernel=kernel, gamma=float(gamma))
            self._kernel = ((kernel, float(gamma)), K, Kte)
        _, K, Kte = self._kernel
        return np.ascontiguousarray(solve_kernel(K, float(alpha), Kte.T).T)


class CategoryScorer:
    """Figures of predictions ``C @ E`` computed from category coefficients ``C`` ``(n, c)``.

    Parameters
    ----------
    class_emb : (c, q)
        Category text embeddings ``E``.
    label_index : (n,) int
        True category row of each test object (their true targets are ``E[label_index]``).
    candidates : (n, c) bool, optional
        Per object, the categories it is ranked among for the ``*_unseen`` figures.

    Notes
    -----
    Predictions are ``P = C E``; with ``G = E E^T``: ``P E^T = C G``, ``||P_i||^2 = (C G C^T)_ii`` and
    ``||P_i - E_l||^2 = ||P_i||^2 - 2 (C G)_{il} + G_ll``. The uniform R² uses the same identities with
    ``E D`` for ``D = diag(SS_tot)^{-1/2}`` over the text dimensions that vary over the test objects (constant
    ones are left out, as in :func:`objalign.stats.metrics.r2_uniform`).

    The R² figures need only totals over the objects: for a Gram ``H``, ``sum_i C_i H C_i^T = <H, C^T C>`` and
    ``sum_i (C H)_{i l_i} = <C, H[:, l]^T>``, so they take the ``(c, c)`` matrix ``C^T C`` (which does not depend
    on the targets: :func:`smoother_nulls` computes it once for every target set) and one dot product each.
    Rankings use ``C G diag(||E_k||)^{-1}`` from one product with the scaled Gram.
    """

    def __init__(self, class_emb: np.ndarray, label_index: np.ndarray, candidates: np.ndarray | None = None):
        E = np.asarray(class_emb, dtype=np.float64)
        self.labels = lab = np.asarray(label_index)
        self.G = E @ E.T
        T = E[lab]
        ss_tot = np.sum((T - T.mean(axis=0)) ** 2, axis=0)
        live = ss_tot > CONSTANT_DIM_RTOL * max(float(ss_tot.max()), 1e-300)
        self.q = max(int(live.sum()), 1)
        Ed = np.where(live, E / np.sqrt(np.where(live, ss_tot, 1.0)), 0.0)
        self.Gd = Ed @ Ed.T
        El = np.where(live, E, 0.0)
        self.Gl = El @ El.T  # residuals over the varying dimensions (variance-weighted R²)
        self.ss_tot = float(ss_tot[live].sum()) if live.any() else 1.0
        self.e_norm = np.sqrt(np.maximum(np.diag(self.G), 1e-300))
        self.candidates = candidates
        n, c = len(lab), len(E)
        self.rows = np.arange(n)
        # the rest serves figures_batch_cn, on coefficients laid out (c, n) per permutation
        self._Gs = self.G / self.e_norm[:, None]  # (Gs K)_{kn} = (C G)_{nk} / ||E_k||, the ranking similarities
        self._own = lab * n + self.rows  # flat index of (l_i, i) in a (c, n) array
        self._g_own = self.G[lab, lab]
        self._e_own = self.e_norm[lab]
        self._r2 = [self._totals(H) for H in (self.Gd, None if live.all() else self.Gl)]  # None: Gl is G
        self._count = np.uint8 if c < 255 else np.int32  # rank counts (at most c - 1)
        self._cand = None if candidates is None else np.ascontiguousarray(np.asarray(candidates, dtype=bool).T)

    def _totals(self, H):
        """What the residual total over a Gram ``H`` needs: ``H`` flat, ``H[:, l]`` flat and ``sum_i H_{l_i l_i}``."""
        if H is None:
            return None
        lab = self.labels
        return H.reshape(1, -1, 1), H[:, lab].reshape(1, -1, 1), float(H[lab, lab].sum())

    def figures(self, C: np.ndarray) -> dict[str, float]:
        """All figures of predictions ``C @ class_emb`` for ``C`` of shape (n, c)."""
        return {k: float(v[0]) for k, v in self.figures_batch(C[None]).items()}

    def figures_batch(self, C: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`figures` of a stack of coefficient matrices ``C`` (m, n, c): figure -> (m,) array."""
        return self.figures_batch_cn(np.ascontiguousarray(np.asarray(C, dtype=np.float64).transpose(0, 2, 1)))

    def figures_batch_cn(self, K: np.ndarray, KK: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """:meth:`figures_batch` of the transposed coefficients ``K = C^T`` (m, c, n), the nulls' layout.

        Parameters
        ----------
        K : (m, c, n) C-contiguous
        KK : (m, c, c), optional
            ``K[j] @ K[j].T`` (computed here when not given).

        Notes
        -----
        Each permutation's figures depend on its own ``K[j]`` (and ``KK[j]``) only, to the last bit: no product
        here is computed across the stack, so a permutation scores the same in any batch.
        """
        m, c, n = K.shape
        if KK is None:
            KK = np.matmul(K, K.transpose(0, 2, 1))
        sims = np.matmul(self._Gs, K)
        own_s = np.take(sims.reshape(m, c * n), self._own, axis=1)  # C-ordered: row sums independent of m
        own = own_s * self._e_own  # (C G)_{i l_i}
        p2_raw = np.einsum("mcn,c,mcn->mn", sims, self.e_norm, K)  # ||P_i||^2
        p2 = np.maximum(p2_raw, 0.0)
        res = np.sqrt(np.maximum(p2 - 2 * own + self._g_own, 0.0))
        flat_KK, flat_K = KK.reshape(m, 1, c * c), K.reshape(m, 1, c * n)
        H, H_own, h_own = self._r2[0]
        wres = (np.matmul(flat_KK, H) - 2 * np.matmul(flat_K, H_own))[:, 0, 0] + h_own
        if self._r2[1] is None:
            res2_live = p2_raw.sum(axis=1) - 2 * own.sum(axis=1) + float(self._g_own.sum())
        else:
            H, H_own, h_own = self._r2[1]
            res2_live = (np.matmul(flat_KK, H) - 2 * np.matmul(flat_K, H_own))[:, 0, 0] + h_own
        above = np.greater(sims, own_s[:, None, :])
        rank = 1 + np.add.reduce(above.view(np.uint8), axis=1, dtype=self._count).astype(np.int64)
        out = {
            "r2": 1.0 - wres / self.q,
            "r2_variance_weighted": 1.0 - res2_live / self.ss_tot,
            "cosine_mean": np.mean(own / (np.sqrt(np.maximum(p2, 1e-24)) * self._e_own), axis=1),
            "residual_mean": res.mean(axis=1),
            "residual_median": np.median(res, axis=1),
            "top1": np.mean(rank <= 1, axis=1),
            "top5": np.mean(rank <= 5, axis=1),
            "mean_rank": rank.mean(axis=1),
        }
        if self._cand is not None:
            unseen = np.logical_and(above, self._cand, out=above).view(np.uint8)
            ru = 1 + np.add.reduce(unseen, axis=1, dtype=self._count).astype(np.int64)
            out.update(top1_unseen=np.mean(ru <= 1, axis=1), top5_unseen=np.mean(ru <= 5, axis=1),
                       mean_rank_unseen=ru.mean(axis=1))
        return out


def _check_permutations(n_permutations) -> None:
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ObjalignError(f"n_permutations must be a positive integer (e.g. 1000), got {n_permutations!r}")


def smoother_null(blocks: list[dict], class_emb: np.ndarray, n_permutations: int, seed: int = 0,
                  candidates: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Null distributions of every figure for one or several pooled linear-smoother fits.

    Parameters
    ----------
    blocks : list of dict
        One per fit (a held-out-image split is one block; held-out-category folds are one block each, their
        test objects pooled in block order). Keys: ``S`` (n_test_f, n_train_f) from :func:`smoother_operator`,
        ``train_labels`` (n_train_f,) category rows, ``train_groups`` (n_train_f,) image ids,
        ``test_labels`` (n_test_f,) category rows. For the selection null ``S`` is a dict (grid index ->
        smoother) and ``choice`` (B,) the grid index selected under each permutation (:func:`selection_smoothers`).
    class_emb : (c, q)
        Category text embeddings.
    n_permutations : int
        B, the number of permutations (whole images exchange their labels; see
        :func:`objalign.stats.permutation.group_permutations`).
    seed : int
        Block ``f`` draws its permutations with seed ``seed + f``.
    candidates : (n_test, c) bool, optional
        Unseen candidates per pooled test object (adds the ``*_unseen`` figures).

    Returns
    -------
    dict figure -> (B,) array
    """
    _check_permutations(n_permutations)
    choices = {0: [b.get("choice") for b in blocks]}
    shared = [{**b, "S": b["S"] if isinstance(b["S"], dict) else {0: b["S"]}} for b in blocks]
    for f, b in enumerate(blocks):
        if not isinstance(b["S"], dict):
            choices[0][f] = np.zeros(int(n_permutations), dtype=int)
    return smoother_nulls(shared, {0: class_emb}, choices, n_permutations, seed, candidates)[0]


def smoother_nulls(blocks: list[dict], class_embs: dict, choices: dict, n_permutations: int, seed: int = 0,
                   candidates: np.ndarray | None = None) -> dict:
    """:func:`smoother_null` for several target sets that share the fits' smoothers and permutations.

    Parameters
    ----------
    blocks : list of dict
        As in :func:`smoother_null`, with ``S`` always a dict (grid index -> smoother) holding every grid point
        any target set selects.
    class_embs : dict key -> (c, q_key)
        Each target set's category text embeddings (the same c categories, in the same order).
    choices : dict key -> list (one per block) of (B,) int
        The grid index target set ``key`` selected under each permutation of each block (its real-pairing
        choice repeated, for the fixed null).
    n_permutations, seed, candidates :
        As in :func:`smoother_null`.

    Returns
    -------
    dict key -> (dict figure -> (B,) array)

    Notes
    -----
    A permutation's category coefficients ``S onehot(c[pi])`` depend on the smoother only, not on the targets:
    each is computed once (one sparse product per block and grid point for every row any set needs, exactly
    the rows of a single set's product), laid out ``(c, n_test)`` as the sparse product gives them, with its
    ``C^T C`` (:meth:`CategoryScorer.figures_batch_cn`); sets that selected the same grid points share them, and
    each set's :class:`CategoryScorer` scores them. A permutation's figures for a set do not depend on which
    other sets are in the call.
    """
    _check_permutations(n_permutations)
    keys = list(class_embs)
    c = len(class_embs[keys[0]])
    labels = np.concatenate([b["test_labels"] for b in blocks])
    scorers = {k: CategoryScorer(class_embs[k], labels, candidates) for k in keys}
    perms = [block_permutations(b["train_groups"], int(n_permutations), seed, f) for f, b in enumerate(blocks)]
    ST = [{k: np.ascontiguousarray(S.T) for k, S in b["S"].items()} for b in blocks]
    out: dict = {k: {} for k in keys}
    train_labels = [np.asarray(b["train_labels"]) for b in blocks]
    # The per-permutation products are small: threaded BLAS only adds synchronisation there (measured
    # ~20x slower per permutation with 2 threads on a shared 2-core machine). A chunk of permutations shares one
    # sparse product per block (and per selected grid point): (chunk * c, n_train_f) indicators times S^T.
    n_test = len(labels)
    distinct = len({_choice_key(choices[k], 0, int(n_permutations)) for k in keys})  # sets of coefficients held
    step = max(1, min(int(n_permutations), (64 * 2**20) // max(8 * c * n_test * distinct, 1)))
    with single_threaded_blas():
        for p0 in range(0, int(n_permutations), step):
            p1 = min(int(n_permutations), p0 + step)
            chosen = [np.stack([np.asarray(choices[k][f][p0:p1]) for k in keys]) for f in range(len(blocks))]
            sets: dict[bytes, list] = {}  # sets with the same choices in this chunk share their coefficients
            for k in keys:
                sets.setdefault(_choice_key(choices[k], p0, p1), []).append(k)
            firsts = [keys.index(ks[0]) for ks in sets.values()]
            coef = _chunk_coefficients(blocks, ST, train_labels, perms, chosen, firsts, p0, p1, c)
            for ks, (K, KK) in zip(sets.values(), coef):
                for k in ks:
                    for s0 in range(0, p1 - p0, 32):  # a few permutations' (c, n_test) products at a time
                        for name, v in scorers[k].figures_batch_cn(K[s0:s0 + 32], KK[s0:s0 + 32]).items():
                            out[k].setdefault(name, []).append(v)
    return {k: {name: np.concatenate(v) for name, v in out[k].items()} for k in keys}


def _choice_key(choice: list, p0: int, p1: int) -> bytes:
    """The grid points a set selected for permutations ``p0:p1`` of every block, as one hashable key."""
    return b"".join(np.asarray(ch[p0:p1], dtype=np.int64).tobytes() for ch in choice)


def _chunk_coefficients(blocks, ST, train_labels, perms, chosen, sets, p0, p1, c) -> list[tuple]:
    """Category coefficients of permutations ``p0:p1`` for the sets at rows ``sets`` of ``chosen``.

    Returns, per set, ``K`` (chunk, c, n_test) (``S onehot(c[pi])`` of each block's selected smoother, blocks
    side by side) and ``KK`` (chunk, c, c) ``= K K^T`` (summed over blocks in block order).
    """

    m, n_test = p1 - p0, sum(len(b["test_labels"]) for b in blocks)
    single = len(blocks) == 1
    K = [None if single else np.empty((m, c, n_test)) for _ in sets]
    KK = [None if single else np.zeros((m, c, c)) for _ in sets]
    off = 0
    for f, b in enumerate(blocks):
        n_f = len(b["test_labels"])
        labs = train_labels[f][perms[f][p0:p1]]  # (chunk, n_train_f)
        mine = chosen[f][sets]  # (n_sets, chunk) grid point per set and permutation
        for point in np.unique(mine):
            rows = np.flatnonzero((mine == point).any(axis=0))
            P = (indicator(labs[rows], c) @ ST[f][int(point)]).reshape(len(rows), c, n_f)
            PP = np.matmul(P, P.transpose(0, 2, 1))  # a symmetric rank-k update per permutation
            for s in range(len(sets)):
                sel = mine[s, rows] == point
                if single and sel.all() and len(rows) == m:
                    K[s], KK[s] = P, PP
                    continue
                if K[s] is None:
                    K[s], KK[s] = np.empty((m, c, n_test)), np.zeros((m, c, c))
                K[s][rows[sel], :, off:off + n_f] = P[sel]
                KK[s][rows[sel]] += PP[sel]
        off += n_f
    return list(zip(K, KK))


NULLS = ("selection", "fixed")  #: ``align.null``: hyperparameters re-selected per permutation, or held fixed
NULL_DESCRIPTIONS = {
    "selection": "re-selected in every permutation by the same grouped CV search (the whole procedure repeated)",
    "fixed": "fixed at the cross-validated choice on the real pairing",
}


def check_null(name: str) -> str:
    """``name`` if it is a known null (:data:`NULLS`), else one line with "did you mean"."""

    if name in NULLS:
        return name
    hint = did_you_mean(name, NULLS, cutoff=0.4)
    raise ObjalignError(f"align.null = {name!r} is not a null{hint} (expected one of {', '.join(NULLS)})")


def check_cv_images(train_groups: np.ndarray, cv_folds: int, where: str = "the training split") -> None:
    """The error a fit gives when its training images are fewer than the CV folds (one line, with the fix)."""
    n_groups = len(np.unique(train_groups))
    if n_groups < cv_folds:
        raise ObjalignError(f"align.cv_folds = {cv_folds} but {where} has only {n_groups} images; "
                            "lower align.cv_folds or sample more instances")


def selection_smoothers(method: str, Z_train: np.ndarray, Z_test: np.ndarray, train_labels: np.ndarray,
                        train_groups: np.ndarray, class_emb: np.ndarray, *, cv_folds: int, alphas, gammas=None,
                        n_permutations: int, seed: int = 0, block: int = 0, n_jobs: int = 1,
                        where: str = "the training split") -> dict:
    """The selection null of one fit: the grid point the CV search picks under each permutation, and its smoother.

    Parameters
    ----------
    method : ``"ridge"`` (:class:`~objalign.maps.RidgeCV`) or ``"kernel_ridge"`` (exact RBF
        :class:`~objalign.maps.KernelRidgeCV`)
    Z_train : (n_train, d), Z_test : (n_test, d)
        Features of the fit (PCA'd; PCA does not see the pairing).
    train_labels : (n_train,) category rows of ``class_emb``
    train_groups : (n_train,) image ids (the CV folds are ``GroupKFold(cv_folds)`` on them)
    class_emb : (c, q) category text embeddings
    alphas, gammas : the grid (gammas in absolute units, kernel ridge only)
    n_permutations, seed, block :
        Permutation ``b`` is row ``b`` of :func:`~objalign.stats.permutation.block_permutations`
        ``(train_groups, n_permutations, seed, block)``, the same permutations :func:`smoother_null` scores for
        block ``block``.
    n_jobs : threads for kernel ridge
    where : how the error for too few images names this fit

    Returns
    -------
    dict with ``S`` (grid index -> (n_test, n_train) smoother of the map refitted with that grid point, for every
    index selected), ``choice`` (B,) the grid index selected under each permutation, ``n_refits`` (permutations
    whose choice came from a from-scratch refit: a held-out output was constant) and ``grid`` (list of dict).

    Raises
    ------
    ObjalignError
        Before any permutation runs, if the training images are fewer than the CV folds.
    """

    check_cv_images(train_groups, cv_folds, where)
    if method not in ("ridge", "kernel_ridge"):
        raise ObjalignError(f"selection null: method {method!r} is not ridge or kernel_ridge")
    perms = block_permutations(train_groups, n_permutations, seed, block)
    grid, (choice,), refits = search_choices(method, Z_train, train_labels, train_groups, [class_emb], perms,
                                             cv_folds=cv_folds, alphas=alphas, gammas=gammas, n_jobs=n_jobs)

    fast = FastSmoothers(Z_train, Z_test)

    def operator(p):
        return fast.ridge(p["alpha"]) if method == "ridge" else fast.kernel_ridge(p["alpha"], p["gamma"])

    S = {int(i): operator(grid[i]) for i in np.unique(choice)}
    return {"S": S, "choice": choice, "n_refits": int(refits[0]), "grid": grid}


def search_choices(method: str, Z_train: np.ndarray, train_labels: np.ndarray, train_groups: np.ndarray,
                   class_embs: list, perms: np.ndarray, *, cv_folds: int, alphas, gammas=None,
                   n_jobs: int = 1, cache=None) -> tuple[list[dict], list[np.ndarray], list[int]]:
    """The grid point the grouped CV search picks for every target set under every relabelling ``perms``.

    Parameters
    ----------
    method : ``"ridge"`` or ``"kernel_ridge"`` (exact RBF)
    Z_train : (n_train, d); train_labels : (n_train,) category rows; train_groups : (n_train,) image ids
    class_embs : list of (c, q_k) category text embeddings (target sets sharing features and folds)
    perms : (B, n_train) int; row ``b`` gives row ``i`` the category of row ``perms[b, i]`` (the identity gives
        the choice on the real pairing)
    cv_folds, alphas, gammas, n_jobs : the search (``GroupKFold(cv_folds)``; gammas absolute, kernel ridge only)
    cache : :class:`objalign.maps._permuted_cv.WeightCache`, optional
        Shared by the searches of one fit (ridge's and kernel ridge's on the same rows, targets and
        relabellings): each relabelling's per-fold target weights are computed once.

    Returns
    -------
    grid : list of dict (``GridSearchCV`` order)
    choices : per target set, (B,) grid index
    n_refits : per target set, how many rows were refitted from scratch (a held-out output was constant)
    """
    from sklearn.model_selection import GroupKFold


    labels = np.asarray(train_labels)
    present, codes = np.unique(labels, return_inverse=True)
    Zc = [np.asarray(E, dtype=np.float64)[present] for E in class_embs]
    cv = GroupKFold(n_splits=cv_folds)
    splits = resolve_splits(cv, Z_train, None, train_groups, len(Z_train))
    alphas = np.asarray(alphas, dtype=np.float64)
    if method == "ridge":
        grid = param_grid(alphas)
        with single_threaded_blas():  # many small products per permutation: threads only add synchronisation
            choices = ridge_choices(Z_train, codes, Zc, splits, alphas, perms, cache=cache)

        def search():
            return RidgeCV(alphas=alphas, cv=cv)
    else:
        gammas = np.asarray(gammas, dtype=np.float64)
        grid = param_grid(alphas, gammas)
        choices = kernel_choices(Z_train, codes, Zc, splits, alphas, gammas, perms, n_jobs=n_jobs, cache=cache)

        def search():
            return KernelRidgeCV(alphas=alphas, gammas=gammas, kernel="rbf", cv=cv, approx="exact")
    n_refits = []
    for E, choice in zip(class_embs, choices):
        refits = np.flatnonzero(choice < 0)
        for b in refits:
            Y = np.asarray(E)[labels[perms[b]]].astype(Z_train.dtype, copy=False)
            choice[b] = search().fit(Z_train, Y, groups=train_groups).best_index_
        n_refits.append(int(refits.size))
    return grid, list(choices), n_refits


def describe_null(null: dict | None) -> str:
    """One phrase naming the null behind a result row's p-values (its ``null`` entry), for the reports."""
    if not null:
        return "no permutation null"
    if "skipped" in null:
        return f"no permutation null ({null['skipped']})"
    kind = null.get("kind", "fixed")  # rows written before align.null existed used the fixed null
    text = f"{kind} null, B = {null['n_permutations']}: hyperparameters {NULL_DESCRIPTIONS.get(kind, kind)}"
    return text + (f" ({null['reduced']})" if null.get("reduced") else "")

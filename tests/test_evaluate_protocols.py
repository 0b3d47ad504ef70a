"""Evaluation protocols (held-out images / categories) and the align stage's evaluation on made-up data."""

import numpy as np
import pytest

from objalign.evaluation.engine import evaluate
from objalign.config import AlignConfig
from objalign.errors import ObjalignError
from objalign.stats.protocols import heldout_categories, heldout_images


def _objects(n_img=120, c=12, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_img)
    groups = np.repeat(np.arange(n_img) * 7 + 3, sizes)  # arbitrary image ids
    lab = rng.integers(0, c, len(groups))
    return groups, lab


def test_heldout_images_keeps_images_whole():
    groups, _ = _objects()
    (fold,) = heldout_images(groups, 0.25, seed=1)
    assert not set(groups[fold.train]) & set(groups[fold.test])
    assert len(fold.train) + len(fold.test) == len(groups)
    assert 0.15 < len(np.unique(groups[fold.test])) / len(np.unique(groups)) < 0.35


@pytest.mark.parametrize("k", [2, 3, 5])
def test_heldout_categories_folds(k):
    groups, lab = _objects()
    folds = heldout_categories(lab, groups, k, seed=0)
    assert len(folds) == k
    unseen = np.concatenate([f.unseen for f in folds])
    assert sorted(unseen) == sorted(np.unique(lab))  # every category unseen exactly once
    test = np.concatenate([f.test for f in folds])
    assert sorted(test) == list(range(len(lab)))  # every object tested exactly once
    for f in folds:
        assert set(lab[f.test]) == set(f.unseen)
        assert not set(lab[f.train]) & set(f.unseen)  # the map never sees an unseen category
        assert not set(groups[f.train]) & set(groups[f.test])  # nor an image holding one
        # and every image without unseen objects is used for training
        clean = [gid for gid in np.unique(groups) if not np.isin(lab[groups == gid], f.unseen).any()]
        assert sorted(np.unique(groups[f.train])) == sorted(clean)


def test_heldout_categories_is_seeded():
    groups, lab = _objects()
    a = [f.unseen.tolist() for f in heldout_categories(lab, groups, 4, seed=3)]
    assert a == [f.unseen.tolist() for f in heldout_categories(lab, groups, 4, seed=3)]
    assert a != [f.unseen.tolist() for f in heldout_categories(lab, groups, 4, seed=4)]


@pytest.mark.parametrize("call, match", [
    (lambda g, y: heldout_categories(y, g, 1, 0), "category_folds"),
    (lambda g, y: heldout_categories(y, g, 99, 0), "category_folds"),
    (lambda g, y: heldout_categories(y[:8] * 0 + np.arange(8) % 3, np.zeros(8, int), 3, 0), "training objects"),
    (lambda g, y: heldout_images(g, 1.5, 0), "test_size"),
    (lambda g, y: heldout_images(np.zeros(5), 0.2, 0), "single image"),
])
def test_protocol_errors_are_one_line(call, match):
    groups, lab = _objects()
    with pytest.raises(ObjalignError, match=match) as exc:
        call(groups, lab)
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------- evaluate, end to end
def _embeddings(compositional: bool, seed=0, n_img=150):
    """Vision features generated from category structure; text embeddings either share that structure
    (colour + shape parts, so unseen names are predictable) or are unrelated random vectors."""
    rng = np.random.default_rng(seed)
    n_col, n_shape, q, d = 4, 3, 24, 20
    c = n_col * n_shape
    col_t, shape_t = rng.normal(size=(n_col, q)), rng.normal(size=(n_shape, q))
    col_v, shape_v = rng.normal(size=(n_col, d)), rng.normal(size=(n_shape, d))
    parts = [(i % n_col, i // n_col) for i in range(c)]
    E = np.array([col_t[a] + shape_t[b] for a, b in parts]) if compositional else rng.normal(size=(c, q))
    V = np.array([col_v[a] + shape_v[b] for a, b in parts]) if compositional else rng.normal(size=(c, d))
    groups, lab = _objects(n_img, c, seed)
    X = V[lab] + 0.3 * rng.normal(size=(len(lab), d))
    return X, E[lab], groups, lab, E


CFG = AlignConfig(methods=("ridge", "kernel_ridge"), alphas=(0.1, 1.0, 10.0), gammas=(1.0,), cv_folds=3,
                  category_folds=3, n_permutations=100, n_bootstrap=200, common_dim=16, similarity_k=5, svcca_dim=4)


@pytest.fixture(scope="module")
def compositional():
    X, Y, groups, lab, E = _embeddings(True)
    return evaluate(X, Y, groups, lab, E, CFG, [f"cat{j}" for j in range(len(E))], np.arange(len(E)) + 100)


def test_rows_for_every_split_and_method_with_intervals_and_pvalues(compositional):
    rows = compositional["rows"]
    assert {(r["split"], r["method"]) for r in rows} == {
        (s, m) for s in ("heldout_images", "heldout_categories") for m in ("ridge", "kernel_ridge", "mean", "shuffled")}
    for r in rows:
        for k in ("r2", "r2_variance_weighted", "cosine_mean", "residual_mean", "residual_median", "top1", "top5",
                  "mean_rank"):
            lo, hi = r["ci"][k]
            assert lo <= hi
        if r["method"] in ("ridge", "kernel_ridge"):
            assert set(r["pvalue"]) >= {"r2", "top1", "cosine_mean"}
            assert all(1 / 101 <= p <= 1 for p in r["pvalue"].values())
        if r["split"] == "heldout_categories":
            assert {"top1_unseen", "top5_unseen", "mean_rank_unseen"} <= set(r) and "top1_unseen" in r["ci"]
            assert r["chance_top1_unseen"] == pytest.approx(np.mean([1 / len(f["unseen"]) for f in r["folds"]]))
            assert sorted(sum((f["unseen"] for f in r["folds"]), [])) == sorted(f"cat{j}" for j in range(12))
    by = {(r["split"], r["method"]): r for r in rows}
    ridge = by["heldout_images", "ridge"]
    assert ridge["top1"] > 0.9 and ridge["pvalue"]["top1"] == pytest.approx(1 / 101)
    assert ridge["top1"] > by["heldout_images", "mean"]["top1"] + 0.5
    assert ridge["top1"] > by["heldout_images", "shuffled"]["top1"] + 0.5
    # compositional names: unseen categories are predictable from their parts
    zs = by["heldout_categories", "ridge"]
    assert zs["top1_unseen"] > 0.8 and zs["pvalue"]["top1_unseen"] == pytest.approx(1 / 101)
    # per-category rows, similarity, PCA and projection tables for the report
    pc = [p for p in compositional["per_category"] if p["split"] == "heldout_categories" and p["method"] == "ridge"]
    assert sum(p["n"] for p in pc) == zs["n_test"] and {p["category_id"] for p in pc} == set(range(100, 112))
    sim = compositional["similarity"]["values"]
    assert set(sim) == {"cka_linear", "cka_linear_unbiased", "cka_rbf", "mutual_knn", "cknna", "svcca"}
    assert all(v is not None and np.isfinite(v) for v in sim.values())
    assert len(compositional["pca"]["vision_explained_variance_ratio"]) == 16
    assert compositional["projection"]["vision_2d"].shape == (ridge["n_test"], 2)


def test_unrelated_names_are_reported_as_not_generalising():
    X, Y, groups, lab, E = _embeddings(False, seed=1)
    res = evaluate(X, Y, groups, lab, E, CFG)
    by = {(r["split"], r["method"]): r for r in res["rows"]}
    assert by["heldout_images", "ridge"]["top1"] > 0.9  # seen categories: recognised
    zs = by["heldout_categories", "ridge"]
    assert zs["top1_unseen"] < 0.6 and zs["pvalue"]["top1_unseen"] > 0.01  # unseen names: no better than chance
    assert zs["ci"]["top1_unseen"][0] < zs["chance_top1_unseen"] + 0.15


def test_nulls_off_and_bad_settings():
    X, Y, groups, lab, E = _embeddings(True, n_img=60)
    from dataclasses import replace

    res = evaluate(X, Y, groups, lab, E, replace(CFG, n_permutations=0, n_bootstrap=0, protocols=("heldout_images",),
                                                  methods=("ridge",), baselines=()))
    (row,) = res["rows"]
    assert "pvalue" not in row and "ci" not in row and res["nulls"] == {}
    for bad, match in [(dict(n_permutations=20), "at least 100"), (dict(protocols=("heldout_pixels",)), "protocols"),
                       (dict(baselines=("median",)), "unknown"), (dict(confidence=1.5), "confidence")]:
        with pytest.raises(ObjalignError, match=match):
            evaluate(X, Y, groups, lab, E, replace(CFG, **bad))


def test_similarity_section_is_computed_on_the_heldout_pca_features(compositional):
    from objalign.maps import PCAMatch
    from objalign.measures import cka, mutual_knn

    X, Y, groups, lab, E = _embeddings(True)
    (fold,) = heldout_images(groups, CFG.test_size, CFG.seed)
    Z = PCAMatch(n_components=16).fit(X[fold.train]).transform(X[fold.test])
    sim = compositional["similarity"]
    assert sim["n"] == len(fold.test)
    assert sim["values"]["cka_linear"] == pytest.approx(cka(Z, Y[fold.test]))
    assert sim["values"]["mutual_knn"] == pytest.approx(mutual_knn(Z, Y[fold.test], k=5))
    for k in ("cka_linear", "mutual_knn", "cknna"):  # the real pairing beats a shuffled one clearly
        assert sim["values"][k] > sim["values_shuffled"][k] + 0.2


def test_similarity_subsample_cap():
    from dataclasses import replace

    X, Y, groups, lab, E = _embeddings(True, n_img=100)
    cfg = replace(CFG, protocols=("heldout_images",), methods=("ridge",), baselines=(), n_permutations=0,
                  n_bootstrap=0, similarity_max_n=20)
    sim = evaluate(X, Y, groups, lab, E, cfg)["similarity"]
    assert sim["n"] == 20 and sim["n_test"] > 20 and all(v is not None for v in sim["values"].values())


def test_null_skipped_and_recorded_above_null_max_train():
    from dataclasses import replace

    X, Y, groups, lab, E = _embeddings(True, n_img=80)
    cfg = replace(CFG, protocols=("heldout_images",), baselines=(), n_bootstrap=0, null_max_train=10)
    rows = evaluate(X, Y, groups, lab, E, cfg)["rows"]
    assert all(r["pvalue"] == {} and "null_max_train" in r["null"]["skipped"] for r in rows)

"""Permutation p-values of a protocol's result rows: every target set's map against its selection (or fixed) null,
from one shared pass over the permutations (:func:`objalign.stats.nulls.smoother_nulls`)."""

from __future__ import annotations

from objalign.evaluation.settings import AlignConfig
from objalign.stats.nulls import NULL_DESCRIPTIONS, smoother_nulls
from objalign.stats.permutation import pvalues


def null_rows(rows: dict, folds: list, live: dict, label_index, groups, cand_mask, protocol: str, method: str,
              cfg: AlignConfig, results: dict) -> None:
    """Permutation p-values of one method and protocol for every target set (one shared pass over the
    permutations: the category coefficients of a smoother serve every set that selected it)."""
    keys = list(rows)
    ready = [k for k in keys if all(fit["S"] is not None for fit in rows[k][2])]
    for k in keys:
        if k not in ready:
            rows[k][0]["pvalue"] = {}
            rows[k][0]["null"] = {"skipped": f"a fit has more than align.null_max_train = {cfg.null_max_train} "
                                             "training objects (or kernel ridge ran in Nystroem mode)"}
    by_fit: dict[tuple, list[str]] = {}  # sets fitted on the same PCA features share smoothers
    for k in ready:
        fits = rows[k][2]
        by_fit.setdefault((int(fits[0]["n_permutations"]), tuple(f["pca_dim"] for f in fits)), []).append(k)
    for (n_perm, _), ks in by_fit.items():
        blocks = []
        for i, f in enumerate(folds):
            S = {}
            for k in ks:
                S.update(rows[k][2][i]["S"]["S"])
            blocks.append({"S": S, "train_labels": label_index[f.train], "train_groups": groups[f.train],
                           "test_labels": label_index[f.test]})
        choices = {k: [fit["S"]["choice"] for fit in rows[k][2]] for k in ks}
        nulls = smoother_nulls(blocks, {k: live[k] for k in ks}, choices, n_perm, cfg.seed, cand_mask)
        for k in ks:
            row, figs, fits = rows[k]
            null = nulls[k]
            row["pvalue"] = pvalues(figs, null)
            row["null_mean"] = {n: float(v.mean()) for n, v in null.items()}
            row["null"] = {"kind": cfg.null, "n_permutations": int(n_perm), "scheme": "image-blocks",
                           "hyperparameters": NULL_DESCRIPTIONS[cfg.null]}
            reason = fits[0]["null_reason"]
            if reason:
                row["null"]["reduced"] = reason
            for n, v in null.items():
                results[k]["nulls"][f"{protocol}__{method}__{n}"] = v

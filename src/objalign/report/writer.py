"""Report files from a result: ``report.json``, ``report.txt``, figures (``*.png``) and ``report.html``.

Everything here reads a report dictionary (``report.json``'s content: the result rows, per-category figures,
similarity measures, category-level studies ...) and the result's arrays; it never sees a model, a config or a
run folder. :meth:`objalign.AlignmentResult.write_report` and the pipeline's report stage
(:mod:`objalign.pipeline.report`) both end here.

``report.json``'s ``results`` holds one row per (method, split) with the figures of
:mod:`objalign.stats.metrics` and:

``ci``          ``{figure: [low, high]}``: percentile bootstrap interval over test images (``ci_level`` coverage)
``pvalue``      ``{figure: p}``: permutation p-value, training image-label pairings shuffled (ridge, kernel_ridge;
                ``{}`` with a reason in ``null.skipped`` when a fit is too large for the null)
``null``        ``kind`` (``selection``: the CV search repeated in every permutation; ``fixed``: hyperparameters
                held at the real pairing's choice), ``n_permutations`` (and ``reduced``, why fewer), ``scheme``,
                ``hyperparameters`` (the same in words)
``null_mean``   ``{figure: mean of the null}``: what a map that learned nothing scores
``chance_top1`` ``1 / n_candidates``; ``heldout_categories`` adds ``top1_unseen``, ``top5_unseen``,
                ``mean_rank_unseen`` (ranked among the fold's unseen categories only), ``chance_top1_unseen``
                and ``n_candidates_unseen``
``folds``       (``heldout_categories``) per category fold: unseen categories, ``n_train``, ``n_test``,
                ``pca_dim``, hyperparameters
``n_test``, ``n_images_test``, ``n_train``, ``pca_dim``, ``hyperparameters``, ``fit_seconds``

Beside them: ``per_category`` (one entry per split, method and category), ``similarity`` (CKA, mutual k-NN,
CKNNA, SVCCA on held-out features; ``calibrated``: each measure's permutation threshold, p-value, BH-adjusted p-value
and calibrated score), ``pca`` (explained variance), ``protocols`` (what each split means), ``category_level``
(``matching``: blind matching accuracy, interval and shuffle curve; ``rsa``), per result row
``open_vocabulary`` (precision@k among the dataset's names plus distractors, NN and CSLS), ``per_group`` (figures per
category frequency group, LVIS; :mod:`objalign.report.groups`), ``units`` (``object`` and ``image`` rows side by
side, ``prototype`` per-k curve; :mod:`objalign.evaluation.units`) and ``convergence`` (figures per subsample size;
:mod:`objalign.evaluation.convergence`).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from objalign.atomic import atomic_write_json
from objalign.report import beyond, gallery, groups, units
from objalign.report import figures as F
from objalign.report.html import build_html
from objalign.stats.metrics import TABLE_FIGURES
from objalign.stats.nulls import describe_null

COLUMNS = ("method", "split") + TABLE_FIGURES

PROTOCOLS = {
    "heldout_images": "Train and test on disjoint images. Every test category was seen in training, so with one text "
                      "embedding per category this is close to classification: it shows that categories can be told "
                      "apart from vision features, not that the two spaces align.",
    "heldout_categories": "Categories are dealt into folds; in each fold the map (PCA included) is fitted on images "
                          "that hold no object of the fold's unseen categories and tested on the unseen categories' "
                          "objects. "
                          "top-1/top-5/rank rank the true category among ALL categories (the seen ones included, which "
                          "the map was trained to produce); the *_unseen figures rank it among the fold's unseen "
                          "categories only. Does the map generalise to names it never saw?",
}

NOTES = [
    "R2: coefficient of determination averaged uniformly over text dimensions (R2 var.: weighted by their variance). "
    "cosine / residual: cosine similarity and L2 distance between the predicted and the true category's text "
    "embedding. "
    "top-1 / top-5 / mean rank: retrieval of the true category among the candidate category embeddings by cosine "
    "similarity (ties count against the truth).",
    "Intervals: percentile bootstrap over test images (objects of one image are resampled together). "
    "p-values: permutation test; the pairing of training images with their labels is shuffled (whole images exchange "
    "their label sets), the map is refitted and scored on the real test pairing; p = (1 + #null at least as good) / "
    "(1 + B), so the smallest possible p is 1/(B+1). The 'selection' null repeats the whole fitting procedure in "
    "every permutation, the grouped cross-validated choice of alpha (and gamma) included, as the real map had its "
    "hyperparameters chosen on its own pairing: a valid test. The 'fixed' null refits with the hyperparameters chosen "
    "on the real pairing: cheaper, but its p-values lean small near the null. Each table says which null it used.",
    "Baselines: 'mean' predicts the training mean text embedding for every object; 'shuffled' is ridge (with its own "
    "cross-validation) fitted on one shuffle of the training pairing. A fitted map should beat both clearly.",
    "Similarity measures are computed on held-out features with no fitting: CKA (Kornblith et al. 2019; unbiased HSIC "
    "after Song et al. 2012), mutual k-NN and CKNNA (Huh et al. 2024), SVCCA (Raghu et al. 2017). Text targets repeat "
    "(one per category), so nearest-neighbour ties are resolved by their expectation under random tie-breaking.",
]


def _fig(r: dict, k: str, digits: int = 3) -> str:
    v = r.get(k)
    if v is None:
        return "-"
    ci = r.get("ci", {}).get(k)
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f},{ci[1]:.{digits}f}]" if ci else "")


def _pv(r: dict, k: str) -> str:
    p = r.get("pvalue", {}).get(k)
    return "-" if p is None else f"{p:.2g}"


def _shared_names(report: dict) -> list[str]:
    """The names several category ids shared in the dataset, and what ``data.duplicate_names`` did (if any)."""
    dup = report.get("duplicate_names")
    if not dup:
        return []
    listed = "; ".join(f"{n!r}: ids {', '.join(map(str, ids))}" for n, ids in dup["names"].items())
    return [f"shared names   {listed} (identical text targets; data.duplicate_names: {dup['rule']})"]


def format_text(report: dict, title: str, per_instance: dict | None = None) -> str:
    """``report.txt``: the headline, every table, interval and p-value, then the notes.

    ``per_instance`` (the result's per-instance arrays), when given, adds the most-confused pairs.
    """
    v, t = report["vision_encoder"], report["text_encoder"]
    lines = [
        title, "=" * len(title), "", *gallery.headline(report), "",
        f"dataset        {report['dataset']} (fingerprint {report['dataset_fingerprint']})",
        f"instances      {report['n_instances']} embedded of {report['n_instances_sampled']} sampled, "
        f"{report['n_images']} images, {report['n_categories']} categories"
        + (f"; {report['n_skipped']} skipped while embedding (embeddings/*/manifest.json)" if report.get("n_skipped")
           else "")
        + (f"; {report['n_excluded']} annotation(s) of the dataset left out (sample/excluded.json)"
           if report.get("n_excluded") else ""),
        *_shared_names(report),
        f"crops          {report['crop']['mode']} (sources: {report['crop']['sources']}, "
        f"fallbacks: {report['crop']['n_fallback']})",
        f"vision         {v['name']} ({v['dim']}-d" + (f", pooling {v['pooling']})" if v.get('pooling') else ")"),
        f"text           {t['name']} ({t['dim']}-d, prompt {t.get('template', '{}')!r})",
        f"chance top-1   {report['chance_top1']:.3f}", "",
    ]
    if report.get("sampled_categories"):
        sc = report["sampled_categories"]
        lines.insert(-2, f"categories     {sc['n']} sampled, {sc['smallest']} to {sc['largest']} objects each "
                         "(sample.strategy: per_category)")
    rows = report["results"]
    for split in dict.fromkeys(r["split"] for r in rows):
        rs = [r for r in rows if r["split"] == split]
        unseen = any("top1_unseen" in r for r in rs)
        level = next((r["ci_level"] for r in rs if "ci_level" in r), None)
        lines.append(f"{split}: {rs[0]['n_test']} test objects from {rs[0].get('n_images_test', '?')} images"
                     + (f"; [{level:.0%} CI over images]" if level else ""))
        header = (f"{'method':<14}{'R2':<23}{'R2(var)':>8}{'cos':>8}{'res.mean':>9}{'res.med':>8}  {'top1':<21}"
                  f"{'top5':>6}{'rank':>7}{'p(R2)':>9}{'p(top1)':>9}")
        if unseen:
            header += f"  {'top1 unseen':<21}{'p':>8}"
        lines += [header, "-" * len(header)]
        for r in rs:
            line = (f"{r['method']:<14}{_fig(r, 'r2'):<23}{r['r2_variance_weighted']:>8.3f}{r['cosine_mean']:>8.3f}"
                    f"{r['residual_mean']:>9.3f}{r['residual_median']:>8.3f}  {_fig(r, 'top1'):<21}{r['top5']:>6.3f}"
                    f"{r['mean_rank']:>7.2f}{_pv(r, 'r2'):>9}{_pv(r, 'top1'):>9}")
            if unseen:
                line += f"  {_fig(r, 'top1_unseen'):<21}{_pv(r, 'top1_unseen'):>8}"
            lines.append(line)
        extra = [f"chance top-1 {rs[0].get('chance_top1', report['chance_top1']):.3f}"]
        if unseen:
            extra.append(f"among unseen ({rs[0].get('n_candidates_unseen', 0):.1f} per fold) "
                         f"{rs[0].get('chance_top1_unseen', 0):.3f}")
        nulls = [r for r in rs if r.get("null_mean")]
        if nulls:
            r = nulls[0]
            extra.append(f"null mean top-1 ({r['method']}) {r['null_mean'].get('top1', float('nan')):.3f}, "
                         f"B = {r['null']['n_permutations']}")
        lines += ["  " + "; ".join(extra)]
        lines += [f"  p-values, {r['method']}: {describe_null(r.get('null'))}" for r in rs if "null" in r]
        lines += [""]
    for split, why in (report.get("skipped_protocols") or {}).items():
        lines += [f"{split}: skipped ({why})", ""]
    for r in rows:
        if r["hyperparameters"]:
            hp = ", ".join(f"{k}={v:.4g}" for k, v in r["hyperparameters"].items())
            many = " (most frequent over folds)" if r.get("folds") else ""
            lines.append(f"{r['method']:<13}{r['split']:<19}{hp}{many}; PCA to {r['pca_dim']}, "
                         f"{r['n_train']} training objects" + (" per fold" if r.get("folds") else ""))
    sim = report.get("similarity") or {}
    if sim.get("values"):
        lines += ["", f"similarity on held-out features (n = {sim['n']}, k = {sim.get('k')}, SVCCA dim = "
                      f"{sim.get('svcca_dim')}; ties averaged):",
                  "  " + "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in sim["values"].items())]
        if sim.get("values_shuffled"):
            lines.append("  shuffled pairing: " + "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}"
                                                          for k, v in sim["values_shuffled"].items()))
        lines.append(f"  (mutual k-NN chance level ~ {sim.get('chance_mutual_knn', 0):.3f})")
    lines += (beyond.text_lines(report) + units.text_lines(report) + groups.text_lines(report)
              + gallery.text_lines(report, per_instance or {}))
    pc = [r for r in report.get("per_category", []) if r["method"] == "ridge"]
    for split in dict.fromkeys(r["split"] for r in pc):
        worst = sorted((r for r in pc if r["split"] == split), key=lambda r: r["top1"])[:5]
        lines += ["", f"hardest categories, ridge, {split} (top-1, n):",
                  "  " + ", ".join(f"{r['category']} {r['top1']:.2f} ({r['n']})" for r in worst)]
    lines += [""] + [f"- {n}" for n in NOTES + [beyond.NOTE] + ([units.NOTE] if units.present(report) else [])]
    return "\n".join(lines) + "\n"


def write_figures(out: Path, report: dict, arrays: dict) -> list[tuple[str, Path, str]]:
    """Draw every figure of a report into folder ``out``; returns ``(heading, path, caption)`` for each one drawn.

    ``arrays`` holds the result's arrays: ``per_instance``, ``nulls`` and ``projection`` (dicts of arrays, as
    :func:`objalign.evaluation.engine.evaluate` returns them; a missing one draws no figure).
    """
    per = arrays.get("per_instance") or {}
    rows = report["results"]
    per_split: dict = {}
    for r in rows:
        s, m = r["split"], r["method"]
        if f"{s}__{m}__residual_l2" in per:
            per_split.setdefault(s, {})[m] = {"residual_l2": per[f"{s}__{m}__residual_l2"],
                                              "cosine": per[f"{s}__{m}__cosine"]}
    v, t = report["vision_encoder"]["name"], report["text_encoder"]["name"]
    made = []
    if F.intervals(rows, out / "intervals.png"):
        made.append(("headline figures", out / "intervals.png",
                     "Each figure with its bootstrap interval over test images, per method and split; the "
                     "permutation p-value beside fitted maps; dashed lines mark chance top-1."))
    F.residual_histogram(per_split, out / "alignment_hist.png", f"held-out residuals: {v} -> {t}")
    made.append(("residuals", out / "alignment_hist.png",
                 "Per-object L2 residual and cosine between predicted and true text embeddings, per method and split."))
    if report.get("per_category"):
        F.per_category_errors(report["per_category"], out / "per_category.png")
        made.append(("per-category retrieval", out / "per_category.png",
                     "Top-1 retrieval per category (worst at the top), per split and fitted method."))
    if F.null_distributions(arrays.get("nulls") or {}, rows, out / "null_distributions.png"):
        made.append(("observed vs permutation null", out / "null_distributions.png",
                     "Grey: the figure for maps fitted on shuffled image-label pairings; red: the real map."))
    if F.pca_variance(report.get("pca") or {}, out / "pca_variance.png"):
        made.append(("PCA explained variance", out / "pca_variance.png",
                     "Cumulative explained variance of the vision PCA (training objects) and of the text targets."))
    if F.projection(arrays.get("projection") or {}, out / "projection.png"):
        made.append(("2-D projection of both spaces", out / "projection.png",
                     "Left: held-out objects in vision space. Right: category embeddings and mapped objects in "
                     "language space; colours are categories."))
    made += beyond.figures(report, out) + units.figures(report, out)
    return made


def gallery_sections(report: dict, per: dict, gallery_input: dict | None) -> list[tuple[str, str, str]]:
    """The page's first sections: the objects of each protocol and where the map goes wrong (see
    :mod:`objalign.report.gallery`); a run without crop images shows the objects without pictures and one line
    saying why."""
    g = gallery_input or {}
    thumbs = g.get("thumbnails") or {}
    note = g.get("note") if gallery_input is not None else gallery.NO_CROPS
    the_plan = gallery.plan(report, per, g.get("cap", gallery.DEFAULT_CAP))
    if not the_plan:
        why = ("the per-instance arrays hold no true labels (align tables from an older objalign: rerun align)"
               if per else "no per-instance arrays")
        return [("objects", "the objects", f"<p class=why>no gallery: {escape(why)}</p>")]
    return (gallery.gallery_html(report, per, the_plan, thumbs, note)
            + gallery.confusion_html(per, report["results"], the_plan, thumbs))


def write_report(out: str | Path, report: dict, arrays: dict, title: str = "objalign report",
                 html: bool = True, gallery_input: dict | None = None) -> list[str]:
    """Write ``report.json``, ``report.txt``, the figures and (``html``) ``report.html`` into folder ``out``.

    Parameters
    ----------
    out : folder (made if missing)
    report : report.json's content (``results`` rows and the rest, see this module's docstring); its ``figures``
        entry is set to the figures drawn
    arrays : ``per_instance``, ``nulls``, ``projection``: dicts of arrays (figures only)
    title : the report's title
    html : also write the one-file ``report.html`` (figures embedded)
    gallery_input : the objects' thumbnails for the gallery, ``{"thumbnails": {object index: (h, w, 3) uint8},
        "note": why some or all are missing (or None), "cap": most thumbnails}``; the object index is the value of
        ``per_instance["{split}__index"]``. ``None``: no crop images (the gallery says so in one line)

    Returns
    -------
    list of the file names written, ``report.json`` first
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    made = write_figures(out, report, arrays)
    report["figures"] = [p.name for _, p, _ in made]
    report["headline"] = gallery.headline(report)
    files = ["report.json", "report.txt", *report["figures"]]
    notes = NOTES + [beyond.NOTE] + ([units.NOTE] if units.present(report) else [])
    per = arrays.get("per_instance") or {}
    if html:
        top = gallery_sections(report, per, gallery_input)
        page = build_html(report, title, made, notes, report["headline"], top)
        (out / "report.html").write_text(page, encoding="utf-8")
        files.append("report.html")
    atomic_write_json(out / "report.json", report)
    (out / "report.txt").write_text(format_text(report, title, per))
    return files

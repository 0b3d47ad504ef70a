"""Config values refused when the config is loaded (one line naming the key), never minutes later in a stage; a
missing image folder and too few objects stopped in one line; category ids that share a name resolved."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from objalign.config import load_config
from objalign.errors import ObjalignError
from objalign.evaluation.settings import AlignConfig, check_align

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO = CONFIGS / "demo.yaml"


@pytest.mark.parametrize("override, key", [
    ("align.cv_folds=1", "align.cv_folds"),
    ("align.alphas=[]", "align.alphas"),
    ("crop.padding=-1", "crop.padding"),
    ("align.methods=[ridge,ridge]", "align.methods"),
    ("align.common_dim=0", "align.common_dim"),
    ("align.test_size=1.5", "align.test_size"),
    ("align.n_permutations=-1", "align.n_permutations"),
    ("align.n_permutations=20", "align.n_permutations"),
    ("align.similarity_measures=[cka_lineer]", "align.similarity_measures"),
    ("align.null=selectoin", "align.null"),
    ("align.gammas=[0]", "align.gammas"),
    ("align.confidence=1", "align.confidence"),
    ("align.protocols=[]", "align.protocols"),
    ("data.duplicate_names=rename", "data.duplicate_names"),
    ("sample.n=0", "sample.n"),
    ("crop.fill=[0,0,300]", "crop.fill"),
    ("embed.vision.batch_size=0", "embed.vision.batch_size"),
    ("compute.worker_index=2", "--worker-index 2 (compute.worker_index)"),  # the flag and the key, as the CLI says
])
def test_bad_value_is_one_line_at_load_naming_the_key(override, key):
    t0 = time.perf_counter()
    with pytest.raises(ObjalignError) as exc:
        load_config(DEMO, [override])
    msg = str(exc.value)
    assert time.perf_counter() - t0 < 2.0
    assert "\n" not in msg
    assert msg.startswith(key), msg
    value = override.split("=", 1)[1]
    token = value.strip("[]").split(",")[-1]  # the (last) value given, or "[]" for an empty list
    assert (token or "[]") in msg, msg


def test_messages_carry_the_value_and_the_fix():
    with pytest.raises(ObjalignError, match=r"align\.common_dim = 0: expected an integer >= 1; .*e\.g\. 256"):
        load_config(DEMO, ["align.common_dim=0"])
    with pytest.raises(ObjalignError, match=r"align\.similarity_measures: unknown name 'cka_lin'; did you mean "
                                            r"'cka_linear'\?"):
        load_config(DEMO, ["align.similarity_measures=[cka_lin]"])
    with pytest.raises(ObjalignError, match=r"'ridge' listed more than once; list each name once"):
        load_config(DEMO, ["align.methods=[ridge,ridge]"])
    with pytest.raises(ObjalignError, match=r"at least 100 \(or 0 to turn nulls off\)"):
        load_config(DEMO, ["align.n_permutations=20"])


def test_every_shipped_config_loads():
    from objalign.matrix.config import load_matrix
    from objalign.pipeline.chain import load_sweep

    load_config(None)
    for path in sorted(CONFIGS.glob("*.yaml")):
        doc = __import__("yaml").safe_load(path.read_text())
        if "variants" in doc:
            assert load_sweep(path)
        elif "base" in doc:
            assert load_matrix(path)
        else:
            load_config(path)


def test_check_align_works_on_a_bare_align_config():
    cfg = AlignConfig()
    assert check_align(cfg) is cfg
    assert check_align(AlignConfig(methods=("ridge", "mean"), baselines=("shuffled",), similarity_measures=(),
                                   match_methods=(), n_permutations=0, n_bootstrap=0)).n_permutations == 0
    for bad, key in ((dict(cv_folds=1), "align.cv_folds"), (dict(common_dim=0), "align.common_dim"),
                     (dict(alphas=()), "align.alphas"), (dict(n_permutations=-1), "align.n_permutations"),
                     (dict(common_dim=True), "align.common_dim"), (dict(test_size="x"), "align.test_size"),
                     (dict(similarity_measures=("svca",)), "align.similarity_measures")):
        with pytest.raises(ObjalignError, match=rf"^{key}"):
            check_align(dataclasses.replace(cfg, **bad))


def test_methods_of_checks_the_settings():
    from objalign.evaluation.engine import methods_of

    assert methods_of(AlignConfig()) == ["ridge", "kernel_ridge", "mean", "shuffled"]
    with pytest.raises(ObjalignError, match=r"^align\.cv_folds = 1"):
        methods_of(AlignConfig(cv_folds=1))


def test_name_lists_have_one_definition():
    """The names a setting may take are the very tuples the implementations use (one definition each)."""
    from objalign import config, evaluation
    from objalign.crops.render import BACKGROUNDS
    from objalign.data import coco
    from objalign.embed import store
    from objalign.encoders import hf_dinov2, prompts
    from objalign.evaluation import engine
    from objalign.evaluation.heldout_similarity import SIMILARITY_MEASURES
    from objalign.evaluation.units import UNITS
    from objalign.measures.matching import METHODS
    from objalign.stats.nulls import NULLS

    s = evaluation.settings
    assert s.MAP_METHODS is engine.METHODS and s.BASELINE_METHODS is engine.BASELINES
    assert s.SIMILARITY_IDS is SIMILARITY_MEASURES and s.MATCH_IDS is METHODS
    assert s.NULL_KINDS is NULLS and s.UNIT_IDS is UNITS
    assert config.CROP_BACKGROUNDS is BACKGROUNDS and config.STORAGE_DTYPES is store.STORAGE_DTYPES
    assert config.PROMPT_MODES is prompts.PROMPT_MODES and config.DUPLICATE_NAME_RULES is coco.DUPLICATE_NAME_RULES
    assert config.PREPROCESS_KINDS is hf_dinov2.PREPROCESS_KINDS
    assert config.POS_INTERPOLATIONS is hf_dinov2.POS_INTERPOLATIONS


# ------------------------------------------------------------------------------------ item 2: missing images
def test_missing_image_folder_is_refused_before_sampling(small_demo, tmp_path):
    from objalign.data.stage import run_sample

    cfg = load_config(None, {"data.kind": "coco", "data.root": str(small_demo), "data.images": "no_such_folder"})
    with pytest.raises(ObjalignError) as exc:
        run_sample(cfg, tmp_path / "run")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("data.images = 'no_such_folder'")
    assert str(Path(small_demo) / "no_such_folder") in msg
    assert not (tmp_path / "run" / "sample" / "instances.parquet").exists()


def test_align_stops_in_one_line_with_too_few_objects(tmp_path):
    from objalign.pipeline.align import check_enough

    cfg = AlignConfig()
    (tmp_path / "embed").mkdir()
    (tmp_path / "embed" / "stage.json").write_text(json.dumps(
        {"summary": {"skipped": [{"annotation_id": 1, "reason": "image not found: x.jpg"}] * 3}}))
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ObjalignError, match=r"^align: no objects to align: all 3 sampled objects were skipped while "
                                            r"embedding \(first: image not found: x\.jpg\); check data\.images"):
        check_enough(tmp_path, empty, empty, cfg)
    with pytest.raises(ObjalignError, match=r"^align: 4 object\(s\) from 1 image"):
        check_enough(tmp_path, np.ones(4), np.arange(4), cfg)
    with pytest.raises(ObjalignError, match=r"^align: all 4 objects are of 1 category"):
        check_enough(tmp_path, np.arange(4), np.ones(4), cfg)
    with pytest.raises(ObjalignError, match=r"^align\.category_folds = 5 but the run has 3 categories"):
        check_enough(tmp_path, np.arange(6), np.arange(6) % 3, AlignConfig(protocols=("heldout_categories",)))
    check_enough(tmp_path, np.arange(6), np.arange(6) % 3, cfg)  # held-out images fit; categories are skipped


# ------------------------------------------------------------------------- item 3: category ids sharing a name
def _coco_with_shared_name(tmp_path: Path) -> Path:
    doc = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 50, "height": 50} for i in (1, 2)],
           "categories": [{"id": 3, "name": "cat"}, {"id": 12, "name": "bank"}, {"id": 40, "name": "bank"}],
           "annotations": [{"id": k, "image_id": 1 + k % 2, "category_id": (3, 12, 40)[k % 3], "bbox": [1, 1, 20, 20],
                            "area": 400, "iscrowd": 0} for k in range(6)]}
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(doc))
    return p


def test_shared_names_are_suffixed_with_one_warning_by_default(tmp_path, capsys):
    from objalign.data.coco import load_coco

    ds = load_coco(_coco_with_shared_name(tmp_path), tmp_path)
    assert ds.categories == {3: "cat", 12: "bank (id 12)", 40: "bank (id 40)"}
    assert ds.duplicate_names == {"bank": [12, 40]}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "category ids 12, 40 share the name 'bank'" in err[0] and "'bank (id 12)'" in err[0]
    load_coco(_coco_with_shared_name(tmp_path), tmp_path)
    assert capsys.readouterr().err == ""  # once per dataset and rule


def test_shared_names_merge_or_error(tmp_path, capsys):
    from objalign.data.coco import load_coco

    ds = load_coco(_coco_with_shared_name(tmp_path), tmp_path, duplicate_names="merge")
    assert ds.categories == {3: "cat", 12: "bank"}
    assert sorted({a["category_id"] for a in ds.annotations}) == [3, 12]
    assert "merged into id 12" in capsys.readouterr().err
    with pytest.raises(ObjalignError, match=r"category ids 12, 40 are all 'bank'.*data\.duplicate_names: suffix"):
        load_coco(_coco_with_shared_name(tmp_path), tmp_path, duplicate_names="error")


def test_duplicate_names_reach_the_sample_stage(tmp_path):
    from objalign.data.stage import run_sample
    from objalign.tables import read_table

    ann = _coco_with_shared_name(tmp_path)
    (tmp_path / "images").mkdir()
    base = {"data.kind": "coco", "data.root": str(tmp_path), "data.annotations": ann.name, "sample.min_area": 1}
    run_sample(load_config(None, base), tmp_path / "run")
    names = set(read_table(tmp_path / "run" / "sample" / "instances.parquet")["category"])
    assert names == {"cat", "bank (id 12)", "bank (id 40)"}
    from objalign.report.writer import _shared_names
    from objalign.runs import stage_record

    dup = stage_record(tmp_path / "run", "sample")["summary"]["duplicate_names"]
    assert dup == {"rule": "suffix", "names": {"bank": [12, 40]}}  # the report's "shared names" line reads this
    assert _shared_names({"duplicate_names": dup}) == [
        "shared names   'bank': ids 12, 40 (identical text targets; data.duplicate_names: suffix)"]
    with pytest.raises(ObjalignError, match="share|are all 'bank'"):
        run_sample(load_config(None, {**base, "data.duplicate_names": "error"}), tmp_path / "run2")

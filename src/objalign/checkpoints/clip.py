"""OpenAI CLIP checkpoints (``~/.cache/clip/ViT-B-32.pt``, a TorchScript archive, or a saved state dict) ->
transformers ``CLIPTextModelWithProjection``, and CLIP's BPE tokenizer from OpenAI's own vocabulary file.

The key map follows transformers' ``convert_clip_original_pytorch_to_hf.py`` for the text tower:
``transformer.resblocks.i`` -> ``text_model.encoder.layers.i``, the fused ``attn.in_proj_*`` split into
q/k/v, ``c_fc``/``c_proj`` -> ``fc1``/``fc2``, ``ln_final`` -> ``final_layer_norm`` and ``text_projection``
transposed into a ``Linear``. The image tower (``visual.*``) and ``logit_scale`` are recognised and dropped:
objalign embeds text only with CLIP.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import json
import os
from pathlib import Path

from objalign.checkpoints._io import cache_root
from objalign.checkpoints.keymap import check_against, count_indexed, need, rule
from objalign.errors import ObjalignError

#: Official releases: SHA-256 (the folder name in each URL of OpenAI's ``clip/clip.py`` ``_MODELS``) -> name.
OFFICIAL_SHA256 = {
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762": "RN50",
    "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599": "RN101",
    "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd": "RN50x4",
    "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa": "RN50x16",
    "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c": "RN50x64",
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af": "ViT-B/32",
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f": "ViT-B/16",
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836": "ViT-L/14",
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02": "ViT-L/14@336px",
}
#: Text towers of the ViT releases (``clip/model.py`` ``build_model`` reads the same fields from the tensors).
ARCHS = {
    "clip_vit_b32": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "projection_dim": 512},
    "clip_vit_b16": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "projection_dim": 512},
    "clip_vit_l14": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "projection_dim": 768},
}
#: ``~/.cache/clip`` file names ``clip.load`` writes (the URL's last part).
FILE_NAMES = {"clip_vit_b32": "ViT-B-32.pt", "clip_vit_b16": "ViT-B-16.pt", "clip_vit_l14": "ViT-L-14.pt"}
RELEASE_ARCH = {"ViT-B/32": "clip_vit_b32", "ViT-B/16": "clip_vit_b16", "ViT-L/14": "clip_vit_l14"}

_R = r"transformer\.resblocks\.(\d+)\."
_WB = r"(weight|bias)"
_T = r"text_model.encoder.layers.\1."
RULES = [
    rule(r"token_embedding\.weight", "text_model.embeddings.token_embedding.weight"),
    rule(r"positional_embedding", "text_model.embeddings.position_embedding.weight"),
    rule(_R + r"attn\.in_proj_(weight|bias)", _T + r"self_attn.q_proj.\2", _T + r"self_attn.k_proj.\2",
         _T + r"self_attn.v_proj.\2", split=True),
    rule(_R + r"attn\.out_proj\." + _WB, _T + r"self_attn.out_proj.\2"),
    rule(_R + r"ln_([12])\." + _WB, _T + r"layer_norm\2.\3"),
    rule(_R + r"mlp\.c_fc\." + _WB, _T + r"mlp.fc1.\2"),
    rule(_R + r"mlp\.c_proj\." + _WB, _T + r"mlp.fc2.\2"),
    rule(r"ln_final\." + _WB, r"text_model.final_layer_norm.\1"),
    rule(r"text_projection", "text_projection.weight", transform=lambda t: t.t()),
    # recognised, not part of the text tower: the image tower, the logit scale, build_model's scalars
    rule(r"visual\..+"),
    rule(r"logit_scale|input_resolution|context_length|vocab_size"),
]


def infer(state_dict: dict, where: str) -> tuple[dict, dict]:
    """Text-tower fields (as OpenAI's ``build_model``: heads = width / 64) and the key each was read from."""
    width = int(need(state_dict, "ln_final.weight", where).shape[0])
    depth = count_indexed(state_dict, "transformer.resblocks.")
    fields = {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": max(1, width // 64),
              "projection_dim": int(need(state_dict, "text_projection", where).shape[1]),
              "intermediate_size": int(need(state_dict, "transformer.resblocks.0.mlp.c_fc.weight", where).shape[0]),
              "max_position_embeddings": int(need(state_dict, "positional_embedding", where).shape[0]),
              "vocab_size": int(need(state_dict, "token_embedding.weight", where).shape[0])}
    source = {"hidden_size": "ln_final.weight", "num_hidden_layers": f"transformer.resblocks.{depth - 1}",
              "num_attention_heads": "ln_final.weight", "projection_dim": "text_projection"}
    return fields, source


def build(converted: dict, source_of: dict, fields: dict, where: str):
    """A ``CLIPTextModelWithProjection`` holding ``converted``, float32 (OpenAI ships float16 weights)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=fields["vocab_size"], hidden_size=fields["hidden_size"],
                            intermediate_size=fields["intermediate_size"], projection_dim=fields["projection_dim"],
                            num_hidden_layers=fields["num_hidden_layers"],
                            num_attention_heads=fields["num_attention_heads"],
                            max_position_embeddings=fields["max_position_embeddings"], hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    model = CLIPTextModelWithProjection(config)
    converted = {k: v.to(torch.float32) for k, v in converted.items()}
    check_against(model, converted, source_of, where)
    model.load_state_dict(converted, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- tokenizer

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"


def find_bpe_vocab() -> Path | None:
    """OpenAI's BPE merges file as shipped inside the ``clip`` or ``open_clip`` package, or in ``~/.cache/clip``."""

    for package in ("clip", "open_clip"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            for folder in spec.submodule_search_locations:
                candidate = Path(folder) / BPE_NAME
                if candidate.is_file():
                    return candidate
    candidate = Path(os.path.expanduser("~/.cache/clip")) / BPE_NAME
    return candidate if candidate.is_file() else None


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (as OpenAI's ``simple_tokenizer``)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, [chr(c) for c in chars]))


def tokenizer_files(bpe_path: str | os.PathLike, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` for transformers' ``CLIPTokenizer`` from OpenAI's BPE file.

    The vocabulary is built exactly as OpenAI's ``SimpleTokenizer``: the 256 byte characters, the same with
    ``</w>``, one entry per merge (lines 2 .. 49152 - 256 - 2 + 1 of the file), then the two special tokens.
    """

    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        merges = fh.read().split("\n")[1:49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def openai_tokenizer(bpe_path: str | os.PathLike | None = None, cache: str | os.PathLike | None = None):
    """A transformers ``CLIPTokenizer`` with OpenAI CLIP's vocabulary, built offline from its BPE file.

    Parameters
    ----------
    bpe_path : path, optional
        ``bpe_simple_vocab_16e6.txt.gz``; default: the copy inside the installed ``clip``/``open_clip`` package
        or ``~/.cache/clip``.
    cache : path, optional
        Folder for the generated ``vocab.json``/``merges.txt`` (default: objalign's conversion cache).
    """
    from transformers import CLIPTokenizer


    bpe_path = bpe_path or find_bpe_vocab()
    if bpe_path is None:
        raise ObjalignError(f"CLIP's tokenizer vocabulary {BPE_NAME} was not found (looked in the clip and "
                            "open_clip packages and ~/.cache/clip): pip install open_clip_torch, or copy the file "
                            "into ~/.cache/clip")
    folder = Path(cache) if cache is not None else cache_root() / "clip-openai-tokenizer"
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        tokenizer_files(bpe_path, folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")


def clean_text(text: str) -> str:
    """OpenAI's text cleaning before BPE: HTML entities unescaped (twice), whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).strip().lower()

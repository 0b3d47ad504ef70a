"""Tiny randomly initialised models for tests (real transformers code, no weights, no network)."""


def tiny_dinov2(name: str, pooling: str = "cls", device: str = "cpu", dtype: str = "float32",
                image_size: int | None = None, hidden_size: int = 32, layers: int = 2):
    """A seeded ``HFDinov2`` with a tiny ``Dinov2Config`` (patch 14, 28 px input unless ``image_size``)."""
    import torch
    import transformers

    from objalign.encoders.hf_dinov2 import HFDinov2

    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
                                    intermediate_size=2 * hidden_size, patch_size=14, image_size=28)
    return HFDinov2(name=name, pooling=pooling, device=device, dtype=dtype, model=transformers.Dinov2Model(cfg),
                    image_size=image_size or 28)

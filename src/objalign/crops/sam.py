"""Segment Anything (SAM) box-prompted masks with transformers' ``SamModel``.

Each image is encoded once (``SamModel.get_image_embeddings``); all of its boxes are then prompted in one
batch through the prompt encoder and mask decoder (``multimask_output=True``), and for every box the mask
with the best predicted IoU is kept and resized back to the original image. The ViT image encoder is
what costs (ViT-H: ~632M parameters); the decoder is tiny, so a per-object loop that re-encodes the image
for every box would be ~objects-per-image times slower (see ``bench/sam.py``).

Any checkpoint that loads as ``SamModel`` works: ``facebook/sam-vit-base|large|huge`` and SlimSAM-style
pruned checkpoints (pass their id or a local folder).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from objalign.crops.segmenter import SegResult, Segmenter, check_boxes, check_image, clip_box_xywh, finish_mask
from objalign.errors import ObjalignError, require

__all__ = ["SamSegmenter", "boxes_to_model_frame", "resized_shape"]

DEFAULT_SAM_MODEL = "facebook/sam-vit-huge"


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
    raise ObjalignError(f"dtype must be one of {sorted(names)} or a torch.dtype, got {dtype!r}; try 'bfloat16' on a GPU")


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
    ):
        torch = require("torch", "models")
        require("transformers", "models")
        if not isinstance(max_boxes_per_batch, (int, np.integer)) or max_boxes_per_batch < 1:
            raise ObjalignError(f"max_boxes_per_batch must be an integer >= 1, got {max_boxes_per_batch!r}; try 64")
        self.mask_threshold = float(mask_threshold)
        self.max_boxes_per_batch = int(max_boxes_per_batch)
        self.encoder_calls = 0
        if isinstance(model, (str, os.PathLike)) or model is None:
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
        size = self.image_processor.size
        self.longest_edge = int(size["longest_edge"])

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
            "multimask_output": True,
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
        inputs = self.image_processor(images=images, return_tensors="pt", input_data_format="channels_last")
        pixel_values = inputs["pixel_values"].to(device=self._device, dtype=self._dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixel_values)
        self.encoder_calls += len(images)
        sizes = [
            (tuple(int(v) for v in o), tuple(int(v) for v in r))
            for o, r in zip(inputs["original_sizes"].tolist(), inputs["reshaped_input_sizes"].tolist())
        ]
        return embeddings, sizes

    def decode(self, embedding, size, boxes_xyxy: np.ndarray):
        """Prompt one image's embedding with all of its boxes at once.

        Parameters
        ----------
        embedding : torch.Tensor of shape (1, C, h, w)
            One image's embedding from :meth:`encode`.
        size : ((H, W), (h, w))
            Original and resized size of that image, from :meth:`encode`.
        boxes_xyxy : numpy.ndarray of shape (k, 4)
            Valid boxes ``[x0, y0, x1, y1]`` in original-image pixels.

        Returns
        -------
        masks : numpy.ndarray of shape (k, H, W), dtype bool
            For each box, the multimask output with the highest predicted IoU, at the original size.
        scores : numpy.ndarray of shape (k,), float32
            The predicted IoU of each kept mask.
        """
        import torch

        (height, width), reshaped = size
        k = len(boxes_xyxy)
        masks = np.zeros((k, height, width), dtype=bool)
        scores = np.zeros(k, dtype=np.float32)
        boxes = boxes_to_model_frame(boxes_xyxy, height, width, self.longest_edge)
        pad = self.image_processor.pad_size
        for start in range(0, k, self.max_boxes_per_batch):
            stop = min(start + self.max_boxes_per_batch, k)
            input_boxes = torch.from_numpy(boxes[start:stop][None]).to(self._device)  # (1, b, 4)
            with torch.inference_mode():
                out = self.model(image_embeddings=embedding, input_boxes=input_boxes, multimask_output=True)
                iou = out.iou_scores[0].float()  # (b, 3)
                best = iou.argmax(dim=-1)  # (b,)
                rows = torch.arange(stop - start, device=best.device)
                low_res = out.pred_masks[0, rows, best].float()  # (b, h', w')
                full = self.image_processor.post_process_masks(
                    [low_res[:, None]], [(height, width)], [reshaped],
                    mask_threshold=self.mask_threshold, binarize=True, pad_size=pad,
                )[0]  # (b, 1, H, W), on the model's device
            masks[start:stop] = full[:, 0].cpu().numpy()
            scores[start:stop] = iou[rows, best].cpu().numpy()
        return masks, scores

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
    import socket
    from urllib.parse import urlparse

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

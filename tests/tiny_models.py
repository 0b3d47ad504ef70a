"""Tiny randomly initialised models for tests (real transformers code, no weights, no network), including ones
that run in other processes (Ray workers, CLI children).

Importable by name (``tiny_models:make_tiny_dinov2``) wherever ``tests/`` is on ``PYTHONPATH``. Faults are
switched on through files in ``$OBJALIGN_TEST_FAULT_DIR``, because a Ray worker does not share the test's
memory or environment changes made after the cluster started:

- ``die-once``: the first forward pass that finds it renames it to ``died`` and kills its process with
  ``os._exit`` — in the middle of a shard when the shard has more than one batch (the second forward pass);
- ``delay``: seconds to sleep before every forward pass;
- ``record-nodes``: every forward pass in a Ray worker touches ``node-<its Ray node id>`` (which nodes compute);
- ``hold-job``: a Ray job id; that job's workers block for good at their third forward pass (after one
  two-batch shard), so a test can kill the job's driver with shards certainly still missing.
"""

import contextlib
import os
import time
from pathlib import Path


def tiny_dinov2(name: str, pooling: str = "cls", device: str = "cpu", dtype: str = "float32",
                image_size: int | None = None, hidden_size: int = 32, layers: int = 2, cls=None):
    """A seeded ``HFDinov2`` (or subclass ``cls``) with a tiny ``Dinov2Config`` (patch 14, 28 px input unless
    ``image_size``)."""
    import torch
    import transformers

    from objalign.encoders.hf_dinov2 import HFDinov2

    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=2,
                                    intermediate_size=2 * hidden_size, patch_size=14, image_size=28)
    return (cls or HFDinov2)(name=name, pooling=pooling, device=device, dtype=dtype,
                             model=transformers.Dinov2Model(cfg), image_size=image_size or 28)


def _fault_dir() -> Path | None:
    d = os.environ.get("OBJALIGN_TEST_FAULT_DIR")
    return Path(d) if d else None


def _maybe_fault(calls: int) -> None:
    d = _fault_dir()
    if d is None:
        return
    if (d / "record-nodes").is_file():
        import ray

        if ray.is_initialized():
            (d / f"node-{ray.get_runtime_context().get_node_id()}").touch()
    delay = d / "delay"
    if delay.is_file():
        time.sleep(float(delay.read_text() or 0))
    hold = d / "hold-job"
    if calls > 2 and hold.is_file():
        import ray

        if ray.is_initialized() and ray.get_runtime_context().get_job_id() == hold.read_text().strip():
            while True:  # this job's workers stop after one shard each, until the job is killed
                time.sleep(0.1)
    armed = d / "die-once"
    if calls >= 2 and armed.is_file():
        try:
            armed.rename(d / "died")  # atomic: exactly one process dies
        except FileNotFoundError:
            return
        os._exit(1)


def make_tiny_dinov2(pooling="cls", model_path=None, device="cpu", dtype="float32", image_size=None):
    """A 2-layer, 32-wide DINOv2 with fixed random weights (seed 0), 28-pixel input, with the fault hooks."""
    from objalign.encoders.hf_dinov2 import HFDinov2

    class FaultyTiny(HFDinov2):
        calls = 0

        def _forward(self, pixel_values):
            FaultyTiny.calls += 1
            _maybe_fault(FaultyTiny.calls)
            return super()._forward(pixel_values)

    return tiny_dinov2("tiny-dinov2-dist", pooling=pooling, device=device, dtype=dtype, image_size=image_size,
                       cls=FaultyTiny)


def tiny_sam():
    """A randomly initialised 64-pixel SAM (every parameter perturbed, seed 0) and its processor."""
    import torch
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    cfg = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8,
                           output_channels=32, window_size=4, global_attn_indexes=[1], num_pos_feats=16, mlp_dim=64),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                 iou_head_hidden_dim=32))
    torch.manual_seed(0)
    model = SamModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    processor = SamProcessor(image_processor=SamImageProcessorPil(size={"longest_edge": 64},
                                                                  pad_size={"height": 64, "width": 64}))
    return model, processor


def make_tiny_sam_mode(sam_model=None, sam_model_path=None, device="cpu", dtype="float32", **_):
    """The ``sam`` crop mode with :func:`tiny_sam`."""
    from objalign.crops.modes import SegmenterMode
    from objalign.crops.sam import SamSegmenter

    return SegmenterMode(SamSegmenter.from_model(*tiny_sam()))


def store_files(store: Path) -> dict[str, bytes]:
    """Every shard file of a store (vectors, metadata, skipped lists; crop shards), by relative path."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(Path(store).rglob("*"))
            if p.is_file() and p.parent.name in ("emb", "metadata", "skipped", "shards")}


def temporaries(root: Path) -> list[Path]:
    return sorted(Path(root).rglob(".*.tmp-*"))


def cli_args(out, data) -> list[str]:
    """CLI arguments of a small distributed-stage run: 30 demo objects in shards of 8 (the last one partial),
    batches of 4 (two per shard), the tiny DINOv2 registered as ``tiny-dinov2-dist``."""
    return ["--out", str(out), "--set", "data.kind=coco", "--set", f"data.root={data}", "--set", "sample.n=30",
            "--set", "embed.shard_size=8", "--set", "embed.vision.batch_size=4", "--set", "crop.shard_size=8",
            "--vision", "tiny-dinov2-dist", "--no-progress"]


def vision_store(out: Path) -> Path:
    import json

    return Path(out) / "embeddings" / json.loads((Path(out) / "embeddings" / "vision.json").read_text())["store"]


def one_process_reference(main, folder: Path, data) -> tuple[Path, dict[str, bytes]]:
    """Sample and crop into ``folder/base`` (to copy for each test), embed a copy of it in this process;
    returns the base folder and that vision store's files."""
    import shutil

    base = Path(folder) / "base"
    for stage in ("sample", "crop"):
        assert main([stage] + cli_args(base, data)) == 0
    one = Path(folder) / "one"
    shutil.copytree(base, one)
    assert main(["embed"] + cli_args(one, data)) == 0
    return base, store_files(vision_store(one))


__all__ = ["cli_args", "make_tiny_dinov2", "make_tiny_sam_mode", "one_process_reference", "store_files",
           "temporaries", "tiny_dinov2", "tiny_sam", "vision_store"]


@contextlib.contextmanager
def registered(registry, name: str, target: str):
    """``name`` -> ``target`` in ``registry`` for the block, unless another test module registered it already (then
    left as it is): tests that share the tiny encoders' names do not depend on the order they run in."""
    added = name not in registry.names()
    if added:
        registry.register(name, target)
    try:
        yield
    finally:
        if added:
            registry._entries.pop(name, None)

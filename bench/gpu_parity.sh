#!/usr/bin/env bash
# Parity on a GPU: bench/parity.py on CUDA in the originals' precisions (SAM and DINOv2 in float32 as the reference
# pipeline ran them, CLIP's text tower in float16 as clip.load does on CUDA), random weights, no network needed.
# Prints, per model, the max |diff| and the minimum cosine similarity between objalign's converted model and the
# original implementation; the last line is
#   sam_mask_iou_min=<x> dinov2_cls_maxdiff=<y> clip_text_maxdiff=<z> tokens_identical=<true|false>
# (on CUDA the float32 floors of the CPU run do not apply: TF32/cuDNN kernels and float16 CLIP differ slightly;
# read the cosines, expected >= 0.9999 for float32 and >= 0.999 for float16).
# Needs the parity environment (see .ci/run): torch + matching torchvision with CUDA, pip install -e '.[parity]',
# pip install --no-deps dinov2==0.0.1.dev2.
# Usage: bench/gpu_parity.sh [--sam-images N] [--crops N]   (python bench/parity.py: the CPU float32 run)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_gpu_env.sh"
"$py" -c "import segment_anything, clip, dinov2.models.vision_transformer" 2>/dev/null \
  || { echo "gpu_parity: the original packages are missing; build the parity environment as .ci/run does" >&2; exit 2; }
exec timeout 540 "$py" "$here/parity.py" --device cuda --clip-dtype float16 "$@"

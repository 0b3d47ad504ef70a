#!/usr/bin/env bash
# Extraction on an NVIDIA GPU, offline: DINOv2 ViT-L/14 and the CLIP ViT-B/32 text tower with random weights
# (same FLOPs as the released models), 3,000 demo crops in bfloat16 through objalign's engine.
# Prints objects/s, the fraction of the GPU's dense bf16 matmul peak, and the speedup over a naive batch-1
# float32 loop (floor 10); the last line is
#   objects_per_s=<x> fraction_of_peak=<y> speedup_vs_naive=<z> pipeline_vs_model=<w> gpu=<name>
# Needs a CUDA build of torch plus transformers and pillow (pip install -e '.[demo]').
# Usage: bench/gpu_extract.sh [--n 3000] [--batch-size 128] [--workers 8] [--peak-tflops N]
#        (python bench/gpu_extract.py --tiny: CPU smoke test of the script)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_gpu_env.sh"
exec timeout 290 "$py" "$here/gpu_extract.py" "$@"

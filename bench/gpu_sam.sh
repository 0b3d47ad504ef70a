#!/usr/bin/env bash
# SAM ViT-H image-encoder throughput on an NVIDIA GPU: random weights, bfloat16, no network needed.
# Prints images/s and the fraction of the GPU's dense bf16 peak; the last line is
#   images_per_s=<x> tflops=<y> fraction_of_peak=<z> peak_tflops=<p> gpu=<name>
# Needs a CUDA build of torch plus transformers and pillow (pip install -e '.[models]').
# Usage: bench/gpu_sam.sh [--batches 1,4,8,16,32] [--peak-tflops N]   (python bench/gpu_sam.py --tiny: CPU smoke test)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_gpu_env.sh"
exec timeout 290 "$py" "$here/gpu_sam.py" "$@"

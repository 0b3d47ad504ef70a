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
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py="${PYTHON:-python3}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu available', torch.cuda.is_available(), '| transformers', transformers.__version__)"
exec timeout 290 "$py" "$here/gpu_extract.py" "$@"

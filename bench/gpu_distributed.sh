#!/usr/bin/env bash
# The Ray executor on NVIDIA GPUs, offline: the thesis models with random weights (SAM ViT-H box-prompted
# masks, DINOv2 ViT-L/14 embeddings, bfloat16) through objalign's crop and embed stages on Ray.
# 1 worker vs 2 workers sharing GPU 0, and on a multi-GPU node 2..k workers with a GPU each (per-GPU scaling);
# every configuration's stores must be byte-identical to the 1-worker ones. The last line is
#   sam_objects_per_s=<x> embed_objects_per_s=<y> shared_vs_one=<s> per_gpu_scaling=<p> identical=<true|false> gpu=<name>
# Needs a CUDA build of torch plus pip install -e '.[demo,ray]' (the demo extra gives the offline text encoder).
# Usage: bench/gpu_distributed.sh [--n 1500] [--batch-size 128] [--shard-size 128] [--max-gpus 8]
#        (python bench/gpu_distributed.py --tiny: CPU smoke test of the script, 2 logical Ray GPUs)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_gpu_env.sh"
"$py" -c "import ray; print('ray', ray.__version__)"
exec timeout 590 "$py" "$here/gpu_distributed.py" "$@"

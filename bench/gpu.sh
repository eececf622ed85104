#!/usr/bin/env bash
# The GPU benchmark, as ONE prepared call on a lent device machine (budget <= 8 minutes):
#   ceilings (fp32 and bf16 3x3 conv, device copy bandwidth), training s/it and inference
#   MP/s of our code against them, and end to end a 10 980 x 10 980 4-band uint16 scene x2
#   with training (fast preset, then fp32 vs bf16 inference on the same weights' PSNR gap
#   is reported by bench/throughput.py's JSON).
# The device image has torch but not GDAL/pydicom/dask: these scripts use the engine only.
# Usage (device tool): bash bench/gpu.sh   -> JSON files under $OUT (default bench/results/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout 120 "$PY" bench/throughput.py --device cuda --crop 128 64 --iters 60 --reps 5 \
    --json "$OUT/throughput.json"
timeout 300 "$PY" bench/gpu_scene.py --device cuda --preset fast --tile 1024 \
    --json "$OUT/scene_10980_fast_fp32.json"
timeout 240 "$PY" bench/gpu_scene.py --device cuda --preset fast --tile 1024 \
    --set infer.precision=bf16 --json "$OUT/scene_10980_fast_bf16.json"
echo "results in $OUT"

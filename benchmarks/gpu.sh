#!/usr/bin/env bash
# The GPU run of issue 5 (not yet run: no GPU was lent to the session that wrote it).
# bf16 autocast + channels_last + torch.compile, ResNet-50 and MobileNetV2 with every attention, batch sweep;
# timm's and torchvision's equivalents in the same interleaved run where they are installed (benchmarks/peers.py
# registers them and runs attnzoo bench: attnzoo itself never imports timm or torchvision);
# and the ImageFolder training pipeline's images/s with 16 workers when DATA_DIR is set.
# Usage: benchmarks/gpu.sh [OUT_DIR] [DATA_DIR]
set -euo pipefail
OUT=${1:-bench-out/gpu}
DATA_DIR=${2:-}
COMMON=(--device cuda --dtypes '[bf16]' --channels_last '[true]' --compile '[default]' --batch_sizes '[64, 128, 256]'
        --resolutions '[224]' --warmup 3 --repeats 5 --min_time 1.0)
DATA=()
if [ -n "$DATA_DIR" ]; then DATA=(--data_dir "$DATA_DIR" --data_workers 16); fi
python "$(dirname "$0")/peers.py" --models '[r50, "*_r50"]' --tasks '[infer, train]' "${COMMON[@]}" "${DATA[@]}" --out_dir "$OUT/r50"
python "$(dirname "$0")/peers.py" --models '[mobilenetv2, "*_mobilenetv2", "gam_mobilenetv2@groups=2"]' --tasks '[infer, train]' \
  "${COMMON[@]}" --out_dir "$OUT/mobilenetv2"
attnzoo bench --models '[r50]' --tasks '[infer, train]' --compile '[eager, default, max-autotune]' --device cuda \
  --dtypes '[bf16]' --channels_last '[true]' --batch_sizes '[128]' --graph_breaks false --peers false --out_dir "$OUT/r50-modes"

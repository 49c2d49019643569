#!/usr/bin/env bash
# The CPU run reported in docs/benchmarks.md: compiled (inductor, default mode) fp32, batch 8 at 224x224,
# inference and training step, every attention model interleaved with its plain backbone; then eager vs
# compiled for ResNet-50 inference (without and with inductor freezing). One torch thread: the machine is
# shared, and a 2-thread OpenMP region stalls whenever one of its threads is descheduled.
# Usage: benchmarks/cpu_focused.sh [OUT_DIR]   (then: python benchmarks/make_docs.py OUT_DIR docs)
set -euo pipefail
OUT=${1:-bench-out/cpu}
COMMON=(--device cpu --threads 1 --batch_sizes '[8]' --resolutions '[224]' --warmup 1 --repeats 5 --min_time 0.3)
attnzoo bench --models '[r50, "*_r50"]' --tasks '[infer, train]' --compile '[default]' "${COMMON[@]}" --out_dir "$OUT/r50"
attnzoo bench --models '[mobilenetv2, "*_mobilenetv2", "gam_mobilenetv2@groups=2"]' --tasks '[infer, train]' \
  --compile '[default]' "${COMMON[@]}" --out_dir "$OUT/mobilenetv2"
attnzoo bench --models '[r50]' --tasks '[infer]' --compile '[eager, default]' --graph_breaks false "${COMMON[@]}" \
  --out_dir "$OUT/r50-eager-vs-compiled"
attnzoo bench --models '[r50]' --tasks '[infer]' --compile '[eager, default]' --freezing true --graph_breaks false \
  "${COMMON[@]}" --out_dir "$OUT/r50-eager-vs-compiled-freezing"

#!/usr/bin/env bash
# The Quickstart's first command: set up, then export → optimize → check → bench on the real
# all-MiniLM-L6-v2 sample, on ONNX Runtime CPU, fully offline. Outputs go to ./out/.
# --no-setup: skip the install step (parekit already installed; the tests run it so).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--no-setup" ]]; then
  bash scripts/setup.sh
fi
mkdir -p out
set -x
parekit samples export minilm -o out/minilm.onnx
parekit inspect out/minilm.onnx --no-layers
parekit optimize out/minilm.onnx --passes "drop-layers{count=1}" --calib text --samples 32 \
  -o out/minilm.d.onnx --report out/report.json
parekit check out/minilm.onnx out/minilm.d.onnx --data text --samples 32 \
  --output sentence_embedding --threshold cosine=0.9 --threshold max_abs=inf --json-file out/parity.json
parekit optimize out/minilm.onnx --passes "token-prune{keep=0.5,layers=[2]}" -o out/minilm.p.onnx \
  --report out/report.prune.json
parekit check out/minilm.onnx out/minilm.p.onnx --data text --samples 32 \
  --output sentence_embedding --threshold cosine=0.97 --threshold max_abs=inf --json-file out/parity.prune.json
parekit bench out/minilm.onnx out/minilm.d.onnx out/minilm.p.onnx --data text --batch 8 --seq 128 --iters 10 \
  --json-file out/bench.json
# A TensorRT-RTX engine plan of the token-pruned model (its CPU-only builder needs no GPU; parekit[tensorrt-rtx]).
parekit build out/minilm.p.onnx -o out/minilm.p.plan --backend tensorrt-rtx --report out/build.json
# A Triton Inference Server model repository of it (config.pbtxt built and validated with Triton's own schema).
parekit export triton out/minilm.p.onnx -o out/repo --overwrite

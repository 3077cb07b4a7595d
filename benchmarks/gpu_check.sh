#!/bin/bash
# The one prepared run for a lent GPU machine (issues 12 and 15): the CUDA tests of the layer and the
# library, then the GPU benchmarks, each log under $OUT. Run from the repository root with the library
# built here carried along, e.g.
#   NCNN_ONNX_LIBRARY=build/cp311-cp311-linux_x86_64/libncnn_onnx_ops.so bash benchmarks/gpu_check.sh
# A step that fails is recorded in $OUT/summary.txt and the next one still runs.
set -u
OUT=${OUT:-/tmp/ncnn_onnx_gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

step() {
  local name=$1
  shift
  local started=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - started))s" | tee -a "$OUT/summary.txt"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
step test_cuda "$PY" -m pytest -q -rs tests/test_cuda.py tests/runtime -k "cuda or CUDA"
step layer_cuda "$PY" benchmarks/layer.py --device cuda --repeats 20
if "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
  step ort_cuda "$PY" benchmarks/ort_cuda.py
else
  echo "ort_cuda skipped: this onnxruntime has no CUDAExecutionProvider" | tee -a "$OUT/summary.txt"
fi

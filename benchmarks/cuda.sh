#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with one NVIDIA GPU: the CUDA tests (fla backend, fused
# rotary kernel, models and training on CUDA), then the benchmarks at the shapes of the speed
# issue (B 4, H 8, D 128, bf16 autocast). Every log lands in OUT_DIR (default runs/cuda).
#
#     bash benchmarks/cuda.sh [OUT_DIR]
#
# Each step has its own time limit and a failure does not stop the next one; the exit status
# says whether every step passed. A fresh machine first compiles and autotunes fla's kernels: the
# first fla test and benchmark take minutes (measured on an H200: a 65 s limit was too short).
set -u
out=${1:-runs/cuda}
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 2
python=${PYTHON:-python3}
status=0

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$out/$name.log"
    echo "== $name: exit $rc"
    [ "$rc" -eq 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt"
"$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    >>"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

step tests 1200 "$python" -m pytest -q -n 4 -p no:cacheprovider --maxfail 20 \
    tests/ops/test_fla_backend.py tests/rotary/test_triton_cumulative.py \
    tests/training/test_train_cuda.py tests/models/test_lm.py
cd benchmarks || exit 2
step rotary 600 "$python" rotary.py --device cuda --batch 4 --heads 8 \
    --lengths 2048,8192,32768 --repeats 10 --json "../$out/rotary.json"
step recurrences 900 "$python" recurrences.py --device cuda --lengths 2048,8192 \
    --json "../$out/recurrences.json"
for mixer in attention gla gdn; do
    step "model-$mixer" 900 env SELROPE_FLA=1 "$python" model.py --device cuda --mixers "$mixer" \
        --d-model 1024 --n-layers 6 --n-heads 8 --vocab 32000 --batch 8 --seq-len 2048 \
        --repeats 5 --json "../$out/model-$mixer.json"
done
exit $status

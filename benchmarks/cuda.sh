#!/usr/bin/env bash
# The CUDA checks in one go, for a machine with one NVIDIA GPU: the CUDA tests (fla backend, fused
# rotary kernel, models and training on CUDA), then the benchmarks at the shapes of the speed
# issue (B 4, H 8, D 128, bf16 autocast). Every log lands in OUT_DIR (default runs/cuda).
#
#     bash benchmarks/cuda.sh [--quick] [OUT_DIR]
#
# --quick: the speed goals' rows first, in about 9 minutes (for a short GPU lease): the rotary
# module at T 8,192 and 32,768; training tokens/s of attention and GLA with NoPE, RoPE and
# Selective RoPE (d 1,024, 6 layers, B 8, T 2,048); then the fused-kernel and fla-backend tests.
# It writes 6 files. Without --quick, everything, with generous limits (about an hour at most).
#
# Each step has its own time limit and a failure does not stop the next one; the exit status
# says whether every step passed. A fresh machine first compiles and autotunes fla's kernels: the
# first fla test and benchmark take minutes (measured on an H200: a 65 s limit was too short).
# Where selrope is not installed the script reads it from src/; WHEELS=DIR installs the wheels in
# DIR first (offline, e.g. fla-core on a machine without it).
set -u
quick=0
if [ "${1:-}" = "--quick" ]; then
    quick=1
    shift
fi
out=$(realpath -m "${1:-runs/cuda}")
mkdir -p "$out"
python=${PYTHON:-python3}
[[ $python == */* ]] && python=$(realpath -s "$python")  # a relative path survives the cd
cd "$(dirname "$0")/.." || exit 2
status=0
if [ -n "${WHEELS:-}" ]; then
    "$python" -m pip install -q --no-index --no-deps --target /tmp/selrope-wheels "$WHEELS"/*.whl \
        || exit 2
    export PYTHONPATH=/tmp/selrope-wheels${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$python" -c "import selrope" 2>/dev/null; then
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi

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

if [ "$quick" -eq 1 ]; then
    cd benchmarks || exit 2
    step rotary 200 "$python" rotary.py --device cuda --batch 4 --heads 8 \
        --lengths 8192,32768 --repeats 5 --json "$out/rotary.json"
    step model 220 env SELROPE_FLA=1 "$python" model.py --device cuda --mixers attention,gla \
        --positions nope,rope,selective --d-model 1024 --n-layers 6 --n-heads 8 --vocab 32000 \
        --batch 8 --seq-len 2048 --repeats 3 --json "$out/model.json"
    cd .. || exit 2
    step tests 120 "$python" -m pytest -q -n 4 -p no:cacheprovider --maxfail 20 \
        tests/rotary/test_triton_cumulative.py tests/ops/test_fla_backend.py
    exit $status
fi

step tests 1200 "$python" -m pytest -q -n 4 -p no:cacheprovider --maxfail 20 \
    tests/ops/test_fla_backend.py tests/rotary/test_triton_cumulative.py \
    tests/training/test_train_cuda.py tests/models/test_lm.py
cd benchmarks || exit 2
step rotary 600 "$python" rotary.py --device cuda --batch 4 --heads 8 \
    --lengths 2048,8192,32768 --repeats 10 --json "$out/rotary.json"
step recurrences 900 "$python" recurrences.py --device cuda --lengths 2048,8192 \
    --json "$out/recurrences.json"
for mixer in attention gla gdn; do
    step "model-$mixer" 900 env SELROPE_FLA=1 "$python" model.py --device cuda --mixers "$mixer" \
        --d-model 1024 --n-layers 6 --n-heads 8 --vocab 32000 --batch 8 --seq-len 2048 \
        --repeats 5 --json "$out/model-$mixer.json"
done
exit $status

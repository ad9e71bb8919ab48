#!/usr/bin/env bash
# GPU readiness in one run (< 8 min on one recent NVIDIA GPU): every CUDA-marked test, then the training and
# evaluation benchmarks on the GPU; prints one table at the end and keeps each step's full output in $OUT.
#   bash benchmarks/gpu_check.sh                 # from the repository root, after the README's setup
#   OUT=gpu_check PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
declare -a rows

step() {  # step NAME SECONDS_LIMIT COMMAND...: run, keep the output, remember status and wall time
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    rows+=("$name|$rc|$((SECONDS - start))")
    echo "== $name: exit $rc in $((SECONDS - start)) s (output: $OUT/$name.txt)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1 || true
"$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

step cuda_tests 240 "$PY" -m pytest -m cuda -q -p no:cacheprovider -o addopts="--import-mode=importlib -ra"
step train_r50_bf16 150 "$PY" benchmarks/train.py --model deeplabv3_resnet50 --crop 512 512 --batch 8 --device cuda \
    --amp bf16 --channels-last --size 1280x720 --workers 8 --steps 20
step train_r18_bf16 90 "$PY" benchmarks/train.py --model deeplabv3plus_resnet18 --crop 512 512 --batch 16 \
    --device cuda --amp bf16 --channels-last --size 1280x720 --workers 8 --steps 20
step evaluate_cuda 120 "$PY" benchmarks/evaluate.py --device cuda --images 16

echo
echo "| step | exit | seconds | result |"
echo "|---|---|---|---|"
for row in "${rows[@]}"; do
    IFS='|' read -r name rc secs <<< "$row"
    case $name in
        cuda_tests) result=$(grep -E "passed|failed|error" "$OUT/$name.txt" | tail -1) ;;
        train_*) result=$(grep -A1 "input pipeline" "$OUT/$name.txt" | tail -1 | tr -s ' ') ;;
        evaluate_cuda) result=$(grep -E "^\(a\)|^\(b\)|a / b" "$OUT/$name.txt" | tr -s ' ' | paste -sd';') ;;
    esac
    echo "| $name | $rc | $secs | ${result:-see $OUT/$name.txt} |"
done

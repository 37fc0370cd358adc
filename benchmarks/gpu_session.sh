#!/usr/bin/env bash
# One script for a session that has a GPU, sized to finish in 10 minutes on an H200: build flexrec
# with its CUDA kernels, run the CUDA tests, the kernel benchmarks at the goal points, the peer
# rollout benchmark at batch 64 (SmolLM2), a few SmolLM2 training steps, then print one table of
# every goal with its ratio and write the rows benchmarks/RESULTS.md needs
# (benchmarks/out/gpu_session.md).
#
#   bash benchmarks/gpu_session.sh             (from anywhere, on the GPU machine)
#   bash benchmarks/gpu_session.sh --dry-run   (any machine: prints each step and its time budget)
#
# Every step runs under `timeout` with its budget (seconds below; the sum is at most 600). A step
# that fails or runs out of time is reported in the table and the session goes on. The machine has
# no network: it installs from the working tree with the torch already there.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_session.sh [--dry-run]" >&2; exit 2 ;;
esac

TOTAL_LIMIT=600
OUT="$ROOT/benchmarks/out"
LOGS="$OUT/gpu_session"
STEPS_TSV="$OUT/gpu_session_steps.tsv"
RUN_DIR="${FLEXREC_SESSION_RUN_DIR:-/tmp/flexrec-gpu-session}"  # outside the checkout: the installed package
export ROOT RUN_DIR OUT

# ---- the steps: name, budget (s), what it does; each is a function below ------------------------
STEPS=(
  "env 10 GPU, driver, torch and the card's architecture"
  "build 150 pip install . with FLEXREC_CUDA=1 for the card's architecture, then python -m flexrec.info"
  "cuda_tests 60 pytest tests/kernels/test_cuda.py (CUDA kernels and Triton compiled for the GPU)"
  "kernel_bench 150 FLEXREC_GPU_BENCH=goals pytest benchmarks/test_gpu_kernels.py (goal points)"
  "rollouts 110 pytest benchmarks/peers/test_rollouts.py -k smollm2-135m-P64-G1-K30 (batch 64)"
  "train 100 python -m flexrec.train --model smollm2-135m --size full: 3 SFT + 3 RL steps, 8 eval users"
  "table 10 python benchmarks/session_table.py: goals and ratios, rows for RESULTS.md"
)

step_env() {
  echo "$(date -u '+%Y-%m-%d %H:%M UTC')  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
  python -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')" > "$LOGS/arch"
  echo "arch $(cat "$LOGS/arch")"
}

step_build() {
  local arch
  arch="$(cat "$LOGS/arch" 2>/dev/null || echo "9.0")"
  FLEXREC_CUDA=1 CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="$arch" \
    MAX_JOBS="${MAX_JOBS:-16}" pip install --no-build-isolation --no-deps . > "$LOGS/build_pip.log" 2>&1 \
    || { grep -E -A5 "error" "$LOGS/build_pip.log" | head -60; return 1; }
  mkdir -p "$RUN_DIR"
  (cd "$RUN_DIR" && python -m flexrec.info)
}

step_cuda_tests() {
  cd "$RUN_DIR" && python -m pytest -q -p no:cacheprovider "$ROOT/tests/kernels/test_cuda.py" 2>&1 | tail -15
  return "${PIPESTATUS[0]}"
}

step_kernel_bench() {
  cd "$RUN_DIR" && FLEXREC_GPU_BENCH=goals python -m pytest -q -s -p no:cacheprovider \
    --rootdir "$ROOT/benchmarks" "$ROOT/benchmarks/test_gpu_kernels.py" 2>&1 \
    | grep -E "^(==|GOAL|[a-z_]+ +(eager|triton|cuda|torch|eager_full_vocab) )|passed|failed|error"
  return "${PIPESTATUS[0]}"
}

step_rollouts() {
  cd "$RUN_DIR" && python -m pytest -q -p no:cacheprovider --rootdir "$ROOT/benchmarks" \
    "$ROOT/benchmarks/peers/test_rollouts.py" -k "smollm2-135m-P64-G1-K30" 2>&1 | tail -12
  return "${PIPESTATUS[0]}"
}

step_train() {
  cd "$RUN_DIR" && python -m flexrec.train --model smollm2-135m --size full --data synthetic --num-candidates 30 \
    --sft-steps 3 --rl-steps 3 --critic-epochs 5 --eval-users 8 --eval-every 1000 --save-every 1000 \
    --no-progress --device cuda --out "$RUN_DIR/train" 2>&1 | tail -15
  return "${PIPESTATUS[0]}"
}

step_table() {
  python "$ROOT/benchmarks/session_table.py" --steps "$STEPS_TSV" --out "$OUT"
}

# ---- the runner -----------------------------------------------------------------------------------
total=0
for s in "${STEPS[@]}"; do
  read -r _ budget _ <<< "$s"
  total=$((total + budget))
done
if [ "$total" -gt "$TOTAL_LIMIT" ]; then
  echo "gpu_session: the step budgets add up to $total s, over the $TOTAL_LIMIT s limit" >&2
  exit 1
fi

if [ "$DRY" -eq 1 ]; then
  echo "gpu_session --dry-run: ${#STEPS[@]} steps, $total s of budget (limit $TOTAL_LIMIT s)"
  i=0
  for s in "${STEPS[@]}"; do
    i=$((i + 1))
    read -r name budget what <<< "$s"
    printf "step %d/%d %-12s budget %4d s  %s\n" "$i" "${#STEPS[@]}" "$name" "$budget" "$what"
  done
  echo "total budget $total s"
  exit 0
fi

mkdir -p "$LOGS" "$RUN_DIR"
printf "step\tbudget_s\tseconds\tstatus\n" > "$STEPS_TSV"
export -f step_env step_build step_cuda_tests step_kernel_bench step_rollouts step_train step_table
export LOGS STEPS_TSV
session_start=$SECONDS
for s in "${STEPS[@]}"; do
  read -r name budget what <<< "$s"
  echo "== $name (budget $budget s): $what"
  start=$SECONDS
  # The table step reads the others' status, so theirs are written first.
  [ "$name" = "table" ] && printf "%s\t%s\t%s\t%s\n" "$name" "$budget" "-" "running" >> "$STEPS_TSV"
  timeout --kill-after=5 "$budget" bash -c "step_$name" 2>&1 | tee "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  took=$((SECONDS - start))
  case "$rc" in
    0) status="ok" ;;
    124|137) status="TIMEOUT" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  echo "   $name: $status in $took s (budget $budget s)"
  [ "$name" != "table" ] && printf "%s\t%s\t%s\t%s\n" "$name" "$budget" "$took" "$status" >> "$STEPS_TSV"
done
echo "== done in $((SECONDS - session_start)) s (limit $TOTAL_LIMIT s) $(date -u '+%H:%M UTC'); logs in $LOGS"

#!/usr/bin/env bash
# One script for a session that has a GPU: build flexrec with its CUDA kernels, run the CUDA
# tests, run the GPU benchmarks, print a short table (and the issue's goals) to paste into
# benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_session.sh            (from the repository root, on the GPU machine)
#
# The machine has no network: it installs from the working tree with the torch already there.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== $(date -u '+%Y-%m-%d %H:%M UTC')  $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"

arch="$(python -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')")"
echo "== building (FLEXREC_CUDA=1, TORCH_CUDA_ARCH_LIST=$arch)"
start=$SECONDS
if ! FLEXREC_CUDA=1 CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="$arch" \
    MAX_JOBS="${MAX_JOBS:-8}" pip install --no-build-isolation --no-deps . > /tmp/flexrec-gpu-build.log 2>&1; then
  grep -E -A5 "error" /tmp/flexrec-gpu-build.log | head -60
  echo "BUILD FAILED (full log /tmp/flexrec-gpu-build.log)"
  exit 1
fi
echo "   built in $((SECONDS - start)) s"
# Run from outside the checkout so that the installed package (with its CUDA build) is imported.
RUN_DIR="$(mktemp -d)"
ROOT="$PWD"
(cd "$RUN_DIR" && python -m flexrec.info)

echo "== CUDA tests (CUDA kernels and Triton compiled for the GPU)"
(cd "$RUN_DIR" && python -m pytest -q -p no:cacheprovider "$ROOT/tests/kernels/test_cuda.py" 2>&1 | tail -15)




echo "== GPU benchmarks (table below; rows in benchmarks/out/gpu_kernels.json)"
(cd "$RUN_DIR" && timeout "${FLEXREC_BENCH_TIMEOUT:-420}" python -m pytest -q -s -p no:cacheprovider \
  --rootdir "$ROOT/benchmarks" "$ROOT/benchmarks/test_gpu_kernels.py" 2>&1 \
  | grep -E "^(==|GOAL|[a-z_]+ +(eager|compiled|triton|cuda|torch|eager_full_vocab) )|passed|failed|error" )
echo "== done $(date -u '+%H:%M UTC')"

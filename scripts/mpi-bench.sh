#!/usr/bin/env bash
# Data-parallel overhead: training step time with 1 process and with 2 MPI ranks on the same
# adapter(s), and the gradient all-reduce alone, for the `mnist` and `ddpm-cifar10` presets.
# Needs Open MPI and clang (see .ci/run). On a machine with one GPU (or lavapipe) both ranks
# share it, so this measures the cost of data parallelism, not its speed-up.
#
#   bash scripts/mpi-bench.sh [steps]        (default 6 steps per run; the first 2 are not timed)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
cargo build --release --features mpi --bin ddpm-gpu --example allreduce 2>&1 | tail -1
bin=target/release/ddpm-gpu
mpirun=(mpirun --allow-run-as-root --oversubscribe)
export DDPM_GPU_TUNE=off
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== the all-reduce alone (chunked MPI_Allreduce of f32, after a barrier)"
"${mpirun[@]}" -np 2 target/release/examples/allreduce

# Median seconds per step of a run's metrics (batch / images per second), past the first two.
step_time() {
  python3 - "$1" "$2" <<'PY'
import json, sys
batch = int(sys.argv[2])
lines = [json.loads(l) for l in open(sys.argv[1]) if '"images_per_s"' in l]
t = sorted(batch / l["images_per_s"] for l in lines[2:])
print(f"{t[len(t) // 2]:.3f}")
PY
}

for spec in "mnist 32" "ddpm-cifar10 4"; do
  read -r model batch <<<"$spec"
  args=(train --model "$model" --batch-size "$batch" --steps "$steps" --log-every 1
        --sample-images 0 --checkpoint-every 100000)
  "$bin" "${args[@]}" --out "$tmp/$model-1" 2>"$tmp/$model-1.log"
  "${mpirun[@]}" -np 2 "$bin" "${args[@]}" --out "$tmp/$model-2" 2>"$tmp/$model-2.log"
  echo "== $model, global batch $batch"
  echo "1 process: $(step_time "$tmp/$model-1/metrics.jsonl" "$batch") s per step"
  echo "2 ranks:   $(step_time "$tmp/$model-2/metrics.jsonl" "$batch") s per step"
  grep "gradient all-reduce" "$tmp/$model-2.log"
done

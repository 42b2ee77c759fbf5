#!/usr/bin/env bash
# The first run of ddpm-gpu on a machine with a real GPU, in one command (about 5-8 minutes):
# the test suite, kernel tuning, the step bench, a profile, and a short training of the default
# model with a 64-image sample, all written into one report folder.
#
#   scripts/gpu-check.sh [REPORT_DIR]          (default: gpu-check-<UTC time>)
#
# With cargo on the machine it builds and runs `cargo test --release` and `cargo bench`. On a
# machine without a Rust toolchain, set GPU_CHECK_BIN to a folder of prebuilt release binaries:
# `ddpm-gpu`, the test executables under `tests/` and the bench `step` (see `scripts/README.md`).
#
# GPU_CHECK_BUDGET (seconds, default 900) bounds the whole check: a stage gets at most what is
# left, and once it is spent the remaining stages are skipped (and say so).
# GPU_CHECK_QUICK=1 runs every stage on the `tiny` model in seconds: a check of this script
# itself, for machines without a GPU.
#
# The report: summary.md (adapter, test results, tuning, bench and profile tables, timings),
# tests.log, tune.txt, profile.txt, bench.txt, train.log, loss.png and samples.png. Every stage has its own
# time limit, so one that hangs costs its limit and the others still run.
set -uo pipefail

report=${1:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$report"
report=$(cd "$report" && pwd)
summary=$report/summary.md
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The tuning cache of this check stays out of the user's own.
export DDPM_GPU_CACHE=$work/cache

if [ -n "${GPU_CHECK_BIN:-}" ]; then
    bin=$(cd "$GPU_CHECK_BIN" && pwd)
    ddpm=$bin/ddpm-gpu
else
    command -v cargo >/dev/null || { echo "no cargo: install Rust (https://rustup.rs) or set GPU_CHECK_BIN" >&2; exit 1; }
    cargo build --release || exit 1
    ddpm=$(pwd)/target/release/ddpm-gpu
fi

if [ "${GPU_CHECK_QUICK:-}" = 1 ]; then
    model=tiny cifar=tiny batch=2 images=4 steps=5 ddim=5 bench=
else
    model=mnist cifar=ddpm-cifar10 batch=32 images=64 steps=300 ddim=50 bench=1
fi

say() { echo "$*" | tee -a "$summary"; }
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-900}))
# stage NAME SECONDS COMMAND...: run with a time limit (at most what is left of the budget),
# output appended to $report/$log.
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS))
    if [ $left -lt 10 ]; then
        say "- $name: skipped (the time budget is spent)"
        return 0
    fi
    [ $limit -gt $left ] && limit=$left
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$report/$log" 2>&1
    local rc=$?
    say "- $name: exit $rc in $((SECONDS - start)) s$([ $rc = 124 ] && echo " (stopped at its ${limit} s limit)")"
    return $rc
}

say "# ddpm-gpu GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say ""
"$ddpm" info >"$report/info.txt" 2>&1
say '```'
tee -a "$summary" <"$report/info.txt"
say '```'
rm "$report/info.txt"

say ""
say "## Stages"
log=tests.log
# The tests get at most half of the budget.
full_deadline=$deadline
deadline=$((SECONDS + ${GPU_CHECK_BUDGET:-900} / 2))
if [ -n "${GPU_CHECK_BIN:-}" ]; then
    for t in "$bin"/tests/*; do
        echo "=== $(basename "$t")" >>"$report/$log"
        stage "test $(basename "$t")" 120 "$t" --test-threads=8
    done
else
    stage "cargo test --release" 900 cargo test --release
fi
deadline=$full_deadline

log=tune.txt
stage "tune $model b$batch" 180 "$ddpm" tune --model $model --batch $batch
log=profile.txt
stage "profile $model b$batch training" 120 "$ddpm" profile --model $model --batch $batch

log=train.log
run=$work/run
stage "train $model $steps steps" 300 "$ddpm" train --model $model --steps $steps --out "$run" --score false
cp "$run/loss.png" "$report/loss.png" 2>/dev/null
stage "sample $images images, DDIM $ddim steps" 120 "$ddpm" sample --model "$run" --images $images --sampler ddim --steps $ddim --out "$report/samples.png"

log=bench.txt
if [ -z "$bench" ]; then
    say "- bench step: skipped (GPU_CHECK_QUICK)"
elif [ -n "${GPU_CHECK_BIN:-}" ]; then
    stage "bench step (quick)" 300 env DDPM_BENCH_QUICK=1 "$bin/step" --bench
else
    stage "bench step (quick)" 300 env DDPM_BENCH_QUICK=1 cargo bench --bench step
fi

log=tune.txt
stage "tune $cifar b4" 240 "$ddpm" tune --model $cifar --batch 4
log=profile.txt
stage "profile $model $images-image sampling" 120 "$ddpm" profile --model $model --batch $images --sample
stage "profile $cifar b4 training" 180 "$ddpm" profile --model $cifar --batch 4

say ""
say "## Test results"
say '```'
grep -E "^=== |^test result" "$report/tests.log" | tee -a "$summary" >/dev/null
say '```'
say ""
say "## Tuning (the tuned vs heuristic step)"
say '```'
grep -E "^[0-9]+ cases|^tuning took|^training step" "$report/tune.txt" | tee -a "$summary" >/dev/null
say '```'
say ""
say "## Training"
say '```'
grep -E "^step |done|elapsed" "$report/train.log" | tail -5 | tee -a "$summary" >/dev/null
say '```'
echo "report: $report"

#!/usr/bin/env bash
# The OpenVINO decisions issue 22 left for an AMX host (bench/PROFILE.md section 17), in one run.
#
# Each one trades memory against speed, and the speed side cannot be measured on an AVX2 host (its int8
# FullyConnected runs jit_gemm_i8, which packs the weights on every call: the per-call cost there is not
# AMX's). What it measures, on the AMX Xeon of bench/RESULTS.md (the AVX2 figures: section 17):
#   1. OpenVINO's token budget 256 vs the Encoder's 512 (fresh processes: peak RSS and first-pass sent/s;
#      one process: steady-state sent/s, interleaved). AVX2: -14 to -21 MB, speed unchanged.
#   2. Dropping the mapped weights' pages after every new input shape, not only once per stream
#      (bench/lab/patches/ov_drop_per_shape.patch, applied to a worktree). AVX2: bf16 -4 MB, the others 0.
#   3. The latency hint at batch 32 (one stream) vs the default (two), fresh processes: AVX2 int8 1.00x
#      for -25 MB, bf16 0.90x for -31 MB. On a quiet host: the AMX figure to check is section 10's 0.70x,
#      measured under load 1.5-2.6, where a 2-thread stream waits at every op for a busy core.
#   4. Which mapped weight pages the plugin reads again (bench/lab/ov_residency.py), int8 and bf16.
# Fresh exports of this checkout's HEAD; output in $WORK (default /tmp/amx-next), a summary at the end.
#
#   bash bench/lab/amx_next.sh            # ~25 min on a 2-core host; --force on a CPU without AMX
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
WORK=${WORK:-/tmp/amx-next}
DATA=$(cd .. && pwd)/shared/data/stsbenchmark
PY=$REPO/.venv/bin/python
if ! grep -q amx_int8 /proc/cpuinfo && [ "${1:-}" != "--force" ]; then
  echo "error: this CPU has no AMX (amx_int8 not in /proc/cpuinfo); the decisions here need one (--force runs anyway)" >&2
  exit 2
fi
mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
commit=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD || echo +dirty)
{ echo "commit $commit, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"; lscpu | grep "Model name"; } >"$WORK/stamp.txt"

ee() { "$PY" -m edgeembed "$@"; }
[ -d "$WORK/ov-int8" ] || ee export --format openvino --quantize static --calibration "$DATA/sts-train.csv" \
  --sts "$DATA/sts-test.csv" --out "$WORK/ov-int8"
[ -d "$WORK/ov-bf16" ] || ee export --format openvino --precision bf16 --out "$WORK/ov-bf16"
[ -d "$WORK/ov-w8" ] || ee export --format openvino --quantize weights-int8 --out "$WORK/ov-w8"

# 2's code: HEAD with the per-shape drop, in a worktree of its own, removed again at exit.
git worktree remove --force "$WORK/pershape" 2>/dev/null || rm -rf "$WORK/pershape"
git worktree add -q --detach "$WORK/pershape" HEAD
trap 'git -C "$REPO" worktree remove --force "$WORK/pershape"' EXIT
git -C "$WORK/pershape" apply "$REPO/bench/lab/patches/ov_drop_per_shape.patch"

# 1 + 2 + 3: fresh processes, interleaved (the bench worker's order: load, one sentence, warm-up, STS-b at
# batch 32, 50 at batch 1; peak RSS over all of it).
"$PY" bench/memory.py "$WORK/ov-int8" "$WORK/ov-bf16" "$WORK/ov-w8" --rounds 3 \
  --setting b512='{}' --setting b256='{"max_batch_tokens": 256}' \
  --code head="$REPO" --code pershape="$WORK/pershape" --json "$WORK/memory.json" | tee "$WORK/memory.txt"
"$PY" bench/memory.py "$WORK/ov-int8" "$WORK/ov-bf16" --rounds 3 \
  --setting default='{}' --setting latency='{"hint": "latency"}' | tee "$WORK/hint.txt"

# 1, steady state: one process, budgets interleaved slice by slice.
"$PY" bench/lab/settings_speed.py b512="$WORK/ov-int8" b256="$WORK/ov-int8:{\"budget\":256}" \
  bf16-b512="$WORK/ov-bf16" bf16-b256="$WORK/ov-bf16:{\"budget\":256}" --rounds 5 --no-batch-1 \
  | tee "$WORK/budget_speed.txt"

# 4
for a in ov-int8 ov-bf16; do "$PY" bench/lab/ov_residency.py "$WORK/$a" | tee "$WORK/residency-$a.txt"; done

echo
echo "== $WORK: stamp.txt memory.txt hint.txt budget_speed.txt residency-*.txt =="
cat "$WORK/stamp.txt"
grep -E "^\| " "$WORK/memory.txt" "$WORK/hint.txt" "$WORK/budget_speed.txt"

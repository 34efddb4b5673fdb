#!/usr/bin/env bash
# There (the device machine, repo root): runs the GPU checks on the binaries that
# scripts/device-build.sh made here, writing logs, bench.json and bench.md under $OUT.
#   bash scripts/device-run.sh [PHASE...]   phases: tests sanitize cli bench, or all (default);
#   stream (the streaming engine's benchmark, benches/stream.rs) only when named
# Budget (15 device minutes a session): two calls, each with a timeout that leaves room,
#   run(command="bash scripts/device-run.sh tests cli", carry=["device-bin"], timeout_s=420)
#   run(command="bash scripts/device-run.sh sanitize bench", carry=["device-bin"], timeout_s=540)
# (the machine stays warm between them); each phase has its own timeouts below so that a hang
# cannot eat the call. Writes logs, bench.{json,md} and bench-pairwise.{json,md} under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/cosim-out}
B=device-bin
phases=" ${*:-all} "
# Whether phase $1 was asked for.
want() { [[ "$phases" == *" all "* || "$phases" == *" $1 "* ]]; }
mkdir -p "$OUT"
status=0
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(tr '\n' ' ' < $B/COMMIT)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
} > "$OUT/env.txt"
cat "$OUT/env.txt"

if want tests; then
  for t in $B/test-*; do
    name=$(basename "$t")
    echo "== $name"
    if ! timeout 200 "$t" --include-ignored --test-threads=8 > "$OUT/$name.log" 2>&1; then
      status=1
      echo "FAILED: $name"
    fi
    grep -E "^test result|FAILED|panicked" "$OUT/$name.log" | head -20
  done
fi

if want sanitize; then
  SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  # Small cases that reach every kernel: binary, then test filters.
  for run in "test-cuda edge_cases kernel_variants::f16 reweighting::f32" \
             "test-cuda_pairwise small_every_kernel" \
             "test-cuda_backward edges" \
             "test-cuda_pair_backward edges fast_mode" \
             "test-cuda_stream f64_is_refused a_memory_budget"; do
    set -- $run
    bin=$1; shift
    for tool in memcheck racecheck; do
      echo "== compute-sanitizer $tool $bin"
      if ! timeout 110 "$SAN" --tool "$tool" --error-exitcode 99 $B/$bin --include-ignored \
          --test-threads=1 "$@" > "$OUT/sanitizer-$tool-$bin.log" 2>&1; then
        status=1
        echo "FAILED: sanitizer $tool $bin"
      fi
      tail -3 "$OUT/sanitizer-$tool-$bin.log"
    done
  done
fi

if want cli; then
  echo "== cosim command on the GPU vs the CPU"
  # With several GPUs, `--device cuda:0,1` and `cuda:all` are checked too.
  COSIM_DEVICES=$(nvidia-smi -L | grep -c "^GPU") timeout 120 python3 scripts/device-cli-check.py $B/cosim /tmp/cosim-cli \
    | tee "$OUT/cli.log" || status=1
  echo "== chunked pairwise against whole, end to end"
  timeout 90 python3 scripts/device-chunk-timing.py $B/cosim /tmp/cosim-timing \
    | tee "$OUT/chunk-timing.log" || status=1
fi

if want bench; then
  echo "== benchmarks"
  label="# cosim GPU benchmarks: $(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), commit $(head -1 $B/COMMIT)"
  timeout 150 $B/bench-cosim_bench --gpu-only --json "$OUT/bench.json" --label "$label" \
    | tee "$OUT/bench.log" || status=1
  echo "== pairwise benchmarks"
  timeout 200 $B/bench-pairwise --gpu-only --json "$OUT/bench-pairwise.json" \
    --label "${label/benchmarks/pairwise benchmarks}" | tee "$OUT/bench-pairwise.log" || status=1
  echo "== PyTorch's gradients on this GPU (the anchors of the backward cases)"
  timeout 120 python3 scripts/device-torch-anchors.py "$OUT/torch-anchors.json" \
    | tee "$OUT/torch-anchors.log" || status=1
fi
if [[ "$phases" == *" stream "* ]]; then
  # Not part of `all`: a third call when the first two left time,
  #   run(command="bash scripts/device-run.sh stream", carry=["device-bin"], timeout_s=240)
  echo "== the streaming engine: top-10 against a 4 Mi-vector host corpus, whole vs chunked"
  timeout 200 $B/bench-stream --json "$OUT/bench-stream.json" | tee "$OUT/bench-stream.log" || status=1
fi
exit $status

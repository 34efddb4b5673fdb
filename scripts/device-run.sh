#!/usr/bin/env bash
# There (the device machine, repo root): runs every test with --include-ignored, compute-
# sanitizer memcheck and racecheck on small cases, and the benchmarks; writes logs, a JSON
# and a markdown summary under $OUT. Built here by scripts/device-build.sh.
set -uo pipefail
OUT=${OUT:-/tmp/cosim-out}
B=device-bin
mkdir -p "$OUT"
status=0
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(cat $B/COMMIT | tr '\n' ' ')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
} > "$OUT/env.txt"
cat "$OUT/env.txt"
for t in $B/test-*; do
  name=$(basename "$t")
  echo "== $name"
  if ! timeout 300 "$t" --include-ignored --test-threads=4 > "$OUT/$name.log" 2>&1; then
    status=1
    echo "FAILED: $name"
  fi
  grep -E "^test result|FAILED|panicked" "$OUT/$name.log" | head -20
done
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
SMALL="edge_cases kernel_variants::f16 reweighting::f32"
for tool in memcheck racecheck; do
  echo "== compute-sanitizer $tool"
  if ! timeout 240 "$SAN" --tool "$tool" --error-exitcode 99 $B/test-cuda --include-ignored \
      --test-threads=1 $SMALL > "$OUT/sanitizer-$tool.log" 2>&1; then
    status=1
    echo "FAILED: sanitizer $tool"
  fi
  tail -3 "$OUT/sanitizer-$tool.log"
done
echo "== benchmarks"
label="# cosim GPU benchmarks: $(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), commit $(head -1 $B/COMMIT)"
timeout 240 $B/bench-cosim_bench --gpu-only --json "$OUT/bench.json" --label "$label" | tee "$OUT/bench.log" || status=1
exit $status

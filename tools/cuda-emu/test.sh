#!/usr/bin/env bash
# tools/cuda-emu/test.sh: every GPU test on the emulated CUDA driver. Builds libcuda.so from
# tools/cuda-emu (the kernels of kernels/*.cu compiled as C++), puts it first on
# LD_LIBRARY_PATH, and runs through cosim's own, unchanged code:
#   1. `cosim info`, which must name the emulated device;
#   2. tests/cuda.rs, tests/cuda_pairwise.rs, tests/cuda_backward.rs, tests/cuda_pair_backward.rs and tests/cuda_stream.rs with --include-ignored, streams delayed at
#      random (COSIM_EMU_DELAY, µs) so that a missing wait shows as a wrong result;
#   3. two devices, and a CUDA 12.4 driver that must refuse the kernels with a clear message;
#   4. scripts/device-cli-check.py: `cosim --device cuda` against `--device cpu`, every
#      subcommand, whole, in blocks and in chunks through the two-stream pipelines.
# Tests too large to emulate run smaller or are skipped; each says so in a "cuda-emu note"
# line, and the list is printed at the end. Logs in target/cuda-emu/logs/.
#   tools/cuda-emu/test.sh [TEST-FILTER...]   (filters go to both test binaries; no CLI check)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
lib=$(tools/cuda-emu/build.sh)
logs=$root/target/cuda-emu/logs
mkdir -p "$logs"
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export COSIM_EMU_DELAY=${COSIM_EMU_DELAY:-30}
profile=(--release)

cargo build "${profile[@]}" --bin cosim --tests -q 2>&1 | grep -v "^warning: cosim@" || true
cosim=$root/target/release/cosim
"$cosim" info | tee "$logs/info.log"
grep -q "cosim CUDA emulator" "$logs/info.log" || { echo "test.sh: cosim info does not show the emulated device" >&2; exit 1; }

status=0
for t in cuda cuda_pairwise cuda_backward cuda_pair_backward cuda_stream; do
  start=$SECONDS
  if ! cargo test "${profile[@]}" -q --test "$t" -- --include-ignored "$@" > "$logs/$t.log" 2>&1; then
    status=1
  fi
  { grep -E "^test result|FAILED|panicked|EMU FATAL|^cuda-emu|^error|signal" "$logs/$t.log" || true; } | head -30
  echo "($t: $((SECONDS - start)) s)"
done

if [ $# -eq 0 ]; then
  # Two devices: each opens and computes on its own memory and streams, and a stream's job is
  # shared between them.
  if COSIM_EMU_DEVICES=2 cargo test "${profile[@]}" -q --test cuda -- --include-ignored every_device \
       > "$logs/two-devices.log" 2>&1 \
     && COSIM_EMU_DEVICES=2 cargo test "${profile[@]}" -q --test cuda_stream -- --include-ignored two_gpus \
       >> "$logs/two-devices.log" 2>&1 \
     && COSIM_EMU_DEVICES=2 "$cosim" info | grep -q "cuda:1: cosim CUDA emulator"; then
    echo "two devices: ok"
  else
    status=1
    echo "two devices: FAILED (log: $logs/two-devices.log)"
  fi
  # A CUDA 12.4 driver: the CUDA 13 kernels are refused with both versions named (by `cosim
  # info` and the library), and timing falls back to the host clock.
  if COSIM_EMU_DRIVER=12040 cargo test "${profile[@]}" -q --test cuda -- --include-ignored \
       timing_on_any_driver a_driver_too_old > "$logs/old-driver.log" 2>&1 \
     && COSIM_EMU_DRIVER=12040 "$cosim" info >> "$logs/old-driver.log" 2>&1 \
     && grep -q "CUDA driver: for CUDA 12.4" "$logs/old-driver.log" \
     && grep -q "this driver supports CUDA 12.4; a CUDA 12 driver cannot load CUDA 13 code" "$logs/old-driver.log"; then
    echo "old driver: ok"
  else
    status=1
    echo "old driver: FAILED (log: $logs/old-driver.log)"
  fi
  py=${PYTHON:-$root/.venv-nvcc/bin/python}
  "$py" -c "import numpy" 2>/dev/null || "$py" -m pip install --quiet --disable-pip-version-check numpy
  start=$SECONDS
  # Two emulated devices, so that `--device cuda:0,1` and `cuda:all` are checked too.
  if ! COSIM_EMU_DEVICES=2 COSIM_DEVICES=2 "$py" scripts/device-cli-check.py "$cosim" "$root/target/cuda-emu/cli" > "$logs/cli.log" 2>&1; then
    status=1
  fi
  echo "cli checks: $(grep -c '^ok ' "$logs/cli.log") ok, $(grep -c '^BAD' "$logs/cli.log") bad ($((SECONDS - start)) s)"
  { grep -E "^BAD|EMU FATAL|Error|error" "$logs/cli.log" || true; } | head -20
fi

echo "== tests shrunk or skipped on the emulator:"
# (a note may follow another test's "test NAME ... " on its line: the tests run in parallel)
{ grep -oh "cuda-emu note:.*" "$logs"/cuda*.log || echo "(none)"; } | sort -u
[ $status -eq 0 ] && echo "cuda-emu: all passed" || echo "cuda-emu: FAILED (logs in $logs)"
exit $status

#!/usr/bin/env bash
# Builds the pairwise kernels (kernels/pairwise.cu, unchanged) as plain C++ against the CUDA
# emulation in include/ and runs the harness's case groups against its double reference,
# once with the FFMA kernels and once with the tensor-core ones (include_tc/: an emulated
# <mma.h>). Exits non-zero on any failed check, emulation fault (a barrier not reached by
# every thread, a partial warp mask, an out-of-bounds write into a guard zone) or hang.
#   tools/cuda-emu/run.sh [GROUP...]   groups: see cases.inc; by default every group for the
#   FFMA build and, as the emulated tensor cores are slower, a lighter set for the
#   tensor-core build (run.sh GROUP... runs exactly those on both; splitfull is not in CI).
# Needs g++ (C++20), objdump and x86-64 Linux (the fibers switch stacks in assembly).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${CUDA_EMU_DIR:-$root/target/cuda-emu}
if [ $# -gt 0 ]; then
  ffma_groups=("$@") tc_groups=("$@")
else
  ffma_groups=(sizes batch align special chunk half halfx split)
  tc_groups=(sizes align special half split)
fi
mkdir -p "$out"
flags=(-std=c++20 -O1 -g -pthread -Wno-unknown-pragmas)

build() {  # build NAME [extra include dir] [defines...]
  local name=$1 inc=$2; shift 2
  local I=(-I"$here/include" -I"$root/kernels" -include "$here/include/shim.h")
  [ -n "$inc" ] && I=(-I"$inc" "${I[@]}")
  g++ "${flags[@]}" "${I[@]}" -x c++ -c "$root/kernels/pairwise.cu" -o "$out/$name-kernels.o"
  "$here/genshm.sh" "$out/$name-kernels.o" > "$out/$name-shm.cpp"
  g++ "${flags[@]}" "${I[@]}" "$@" -c "$here/harness.cpp" -o "$out/$name-harness.o"
  g++ "${flags[@]}" "$out/$name-harness.o" "$out/$name-kernels.o" "$out/$name-shm.cpp" \
    "$here/switch.cpp" -o "$out/$name"
}

build emu-ffma "" & b1=$!
build emu-tc "$here/include_tc" -DEMU_TC & b2=$!
wait $b1
wait $b2

# Each build runs its groups in turn; the two builds side by side.
run_groups() {  # run_groups BIN GROUP...: one summary line per group; exit 1 if any failed
  local bin=$1 rc=0
  shift
  for g in "$@"; do
    local start=$SECONDS
    # A group must pass and have checked something (an unknown group checks nothing).
    if timeout 900 "$out/$bin" "$g" > "$out/$bin-$g.log" 2>&1 &&
       grep -Eq '^checks [1-9][0-9]*, failures 0$' "$out/$bin-$g.log"; then
      echo "ok   $bin $g: $(grep -E '^checks' "$out/$bin-$g.log") ($((SECONDS - start)) s)"
    else
      rc=1
      echo "FAIL $bin $g (log: $out/$bin-$g.log)"
      grep -E "FAIL|EMU FATAL|^checks" "$out/$bin-$g.log" | head -20
    fi
  done
  return $rc
}
EMU_ORDER=2 run_groups emu-ffma "${ffma_groups[@]}" > "$out/emu-ffma.summary" & ffma=$!
run_groups emu-tc "${tc_groups[@]}" > "$out/emu-tc.summary" & tc=$!
status=0
wait $ffma || status=1
wait $tc || status=1
cat "$out/emu-ffma.summary" "$out/emu-tc.summary"
exit $status

#!/usr/bin/env bash
# Builds the emulated CUDA driver: libcuda.so(.1) in $CUDA_EMU_DIR (default target/cuda-emu/lib).
# Its kernels are kernels/*.cu themselves, compiled as C++ against include/shim.h (and the
# emulated <mma.h> in include_tc/), each registered under its name with a trampoline deduced
# from its own signature. Prints the directory to put first on LD_LIBRARY_PATH.
# Needs g++ (C++20), objdump, x86-64 Linux, libzstd.so.1 (the fatbins' entries are zstd
# frames) and cuda.h (from the pip CUDA set of scripts/install-nvcc.sh, or $CUDA_EMU_INCLUDE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${CUDA_EMU_DIR:-$root/target/cuda-emu}
lib=$out/lib gen=$out/gen obj=$out/obj
mkdir -p "$lib" "$gen" "$obj"

inc=${CUDA_EMU_INCLUDE:-}
if [ -z "$inc" ]; then
  inc=$(ls -d "$root"/.venv-nvcc/lib/python3.*/site-packages/nvidia/cu13/include 2>/dev/null | head -n 1 || true)
fi
[ -f "$inc/cuda.h" ] || { echo "build.sh: cuda.h not found (run scripts/install-nvcc.sh or set CUDA_EMU_INCLUDE)" >&2; exit 1; }
zstd=$(ls /usr/lib/x86_64-linux-gnu/libzstd.so.1 /lib/x86_64-linux-gnu/libzstd.so.1 2>/dev/null | head -n 1 || true)
[ -n "$zstd" ] || { echo "build.sh: libzstd.so.1 not found" >&2; exit 1; }

opt=${CUDA_EMU_OPT:--O2}
common=(-std=c++20 "$opt" -g -fPIC -pthread -fvisibility=hidden -Wno-unknown-pragmas)
kinc=(-I"$here/include_tc" -I"$here/include" -I"$root/kernels" -include "$here/include/shim.h")

families=()
for cu in "$root"/kernels/*.cu; do families+=("$(basename "$cu" .cu)"); done

# One registry TU per family: the family's source itself, then an entry per extern "C" kernel,
# the names read from the preprocessed source (so the instantiation macros are the one list).
compile_family() {
  local fam=$1 src=$root/kernels/$1.cu
  local names
  names=$(g++ "${common[@]}" "${kinc[@]}" -E -x c++ "$src" |
    grep -oE 'extern "C" +void +[A-Za-z_][A-Za-z0-9_]* *\(' | sed -E 's/.*void +([A-Za-z0-9_]+).*/\1/' | sort -u)
  [ -n "$names" ] || { echo "build.sh: no kernels found in $src" >&2; return 1; }
  {
    echo "#include \"$src\""
    echo "#include \"registry.h\""
    echo "extern \"C\" const emu_kernel emu_kernels_$fam[] = {"
    for n in $names; do echo "    EMU_KERNEL($n),"; done
    echo "    emu_kernel{}};"
  } > "$gen/$fam.cpp"
  g++ "${common[@]}" "${kinc[@]}" -c "$gen/$fam.cpp" -o "$obj/$fam.o"
  echo "$fam: $(echo "$names" | wc -l) kernels" >&2
}

pids=()
for fam in "${families[@]}"; do compile_family "$fam" & pids+=($!); done
{
  echo '#include "emu_abi.h"'
  for fam in "${families[@]}"; do echo "extern \"C\" const emu_kernel emu_kernels_$fam[];"; done
  echo 'extern "C" const emu_family emu_families[] = {'
  for fam in "${families[@]}"; do echo "    {\"$fam\", emu_kernels_$fam},"; done
  echo '    {nullptr, nullptr}};'
} > "$gen/families.cpp"
dsrc=("$here"/driver/*.cpp "$gen/families.cpp")
for s in "${dsrc[@]}"; do
  g++ "${common[@]}" -I"$inc" -I"$here/include" -I"$here/driver" -c "$s" -o "$obj/drv-$(basename "$s" .cpp).o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

kobjs=()
for fam in "${families[@]}"; do kobjs+=("$obj/$fam.o"); done
"$here/genshm.sh" "${kobjs[@]}" > "$gen/shm.cpp"
g++ "${common[@]}" -c "$gen/shm.cpp" -o "$obj/shm.o"
g++ -c "$here/switch.cpp" -fPIC -o "$obj/switch.o"
g++ -shared -pthread -Wl,-soname,libcuda.so.1 -Wl,--no-undefined -Wl,--version-script="$here/version.map" -o "$lib/libcuda.so.1" \
  "${kobjs[@]}" "$obj"/drv-*.o "$obj/shm.o" "$obj/switch.o" "$zstd" -ldl
ln -sf libcuda.so.1 "$lib/libcuda.so"
echo "$lib"

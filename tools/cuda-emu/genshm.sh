#!/bin/sh
# genshm.sh OBJECT... > shm.cpp: the table of the kernel objects' `__shared__` arrays
# (function-local `static thread_local` under the shim, so each OS thread of the pool has its
# own copy): emu_shared_arrays() gives their addresses in the calling thread and their sizes.
set -e
for o in "$@"; do objdump -t "$o"; done |
  awk '$3 ~ /^\.tbss\._ZZ/ && $NF !~ /^_ZZN3emu/ {print $4, $NF}' | sort -u | awk '
  { size[NR] = $1; name[NR] = $2 }
  END {
    print "#include <cstddef>"
    for (i = 1; i <= NR; i++) printf "extern __thread char s%d[] __asm__(\"%s\");\n", i, name[i]
    printf "extern \"C\" int emu_shared_count() { return %d; }\n", NR
    print "extern \"C\" void emu_shared_arrays(char** p, size_t* n) {"
    for (i = 1; i <= NR; i++) printf "    p[%d] = s%d; n[%d] = 0x%s;\n", i - 1, i, i - 1, size[i]
    print "}"
  }'

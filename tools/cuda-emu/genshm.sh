#!/bin/sh
# genshm.sh KERNELS.o > shm_table.cpp: the table of the kernel object's `__shared__` arrays
# (static locals under the emulation), which the launcher poisons before each block.
set -e
objdump -t "$1" | awk '$3 == "O" && $4 ~ /^\.bss\._ZZ/ {print $5, $6}' | sort -u | awk '
  { size[NR] = $1; name[NR] = $2 }
  END {
    print "#include <cstddef>"
    print "namespace emu { struct ShmRange { char* p; unsigned long n; }; }"
    for (i = 1; i <= NR; i++) printf "extern char s%d[] __asm__(\"%s\");\n", i, name[i]
    print "namespace emu { extern const ShmRange g_shm[] = {"
    for (i = 1; i <= NR; i++) printf "{s%d, 0x%s},\n", i, size[i]
    printf "{nullptr, 0}}; extern const int g_shm_count = %d; }\n", NR
  }'

#!/bin/sh
# genshm.sh KERNELS.o > shm_table.cpp: the table of the kernel object's `__shared__` arrays
# (static locals under the emulation), which the launcher zeroes-poisons between blocks.
set -e
syms=$(objdump -t "$1" | awk '$3=="O" && $4 ~ /^\.bss\._ZZ/ {print $5, $6}' | sort -u)
echo '#include <cstddef>'
echo 'namespace emu { struct ShmRange { char* p; unsigned long n; }; }'
i=0
echo "$syms" | while read -r size name; do
  [ -n "$name" ] || continue
  echo "extern char s$i[] __asm__(\"$name\");"
  i=$((i + 1))
done
echo 'namespace emu { extern const ShmRange g_shm[] = {'
i=0
count=0
for _ in $(echo "$syms" | awk 'NF==2 {print $2}'); do count=$((count + 1)); done
echo "$syms" | while read -r size name; do
  [ -n "$name" ] || continue
  echo "{s$i, 0x$size},"
  i=$((i + 1))
done
echo "{nullptr, 0}}; extern const int g_shm_count = $count; }"

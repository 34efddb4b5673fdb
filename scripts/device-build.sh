#!/usr/bin/env bash
# Here (no GPU needed): builds the release test binaries, the benchmarks and the cosim binary
# with the kernels, and copies them to device-bin/ (ignored by git, carried to the device
# machine). Then run them there as the header of scripts/device-run.sh says.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(scripts/install-nvcc.sh)}
export NVCC COSIM_REQUIRE_KERNELS=1
rm -rf device-bin && mkdir -p device-bin
pick() { # cargo's JSON messages → "target-name executable" lines
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    # The cosim binary'"'"'s own unit tests (kind bin) are CPU-only and share the lib'"'"'s target name.
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and "bin" not in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])'
}
cargo test --release --no-run --message-format=json 2>/dev/null | pick | while read -r name exe; do
  case "$name" in bindings|cli|cli_*) continue ;; esac # the cli tests run the cosim binary by its path here
  cp "$exe" "device-bin/test-$name"
done
cargo bench --bench cosim_bench --bench pairwise --bench stream --no-run --message-format=json 2>/dev/null | pick | while read -r name exe; do
  cp "$exe" "device-bin/bench-$name"
done
# The command-line tool, for GPU checks of `cosim info` / `cosim along --device cuda`.
cargo build --release --bin cosim 2>/dev/null
cp "${CARGO_TARGET_DIR:-target}/release/cosim" device-bin/cosim
strip device-bin/* 2>/dev/null || true
git rev-parse --short HEAD > device-bin/COMMIT
git diff --quiet || echo "+uncommitted" >> device-bin/COMMIT
ls -la device-bin
du -sh device-bin
size=$(du -sm device-bin | cut -f1)
[ "$size" -lt 60 ] || { echo "device-bin is ${size} MiB: over the 64 MiB carry limit" >&2; exit 1; }

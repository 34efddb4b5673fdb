"""There (device machine): how much the chunked pairwise path costs against the whole one.

`cosim pairwise --top-k 10` on Q [8192, 768] and K [131072, 768] float32 (32 MiB and
384 MiB), run whole (both sets uploaded once) and with the hidden --block-bytes forcing
chunks of 64 MiB (K in 6 chunks, each read, staged in pinned memory and uploaded while the
previous pair computes), exact and --fast. Wall time of the whole command, best of 3; the
ratio chunked/whole near 1 says the staging and copies hide behind the kernels.
Usage: python3 scripts/device-chunk-timing.py device-bin/cosim OUTDIR
"""
import os
import subprocess
import sys
import time

import numpy as np

cosim, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
r = np.random.default_rng(3)
np.save(f"{out}/q.npy", r.standard_normal((8192, 768), dtype=np.float32))
np.save(f"{out}/k.npy", r.standard_normal((131072, 768), dtype=np.float32))


def best_of(args, runs=3):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([cosim, "--force", "--quiet", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


pw = ["--device", "cuda", "pairwise", f"{out}/q.npy", f"{out}/k.npy", "--top-k", "10", "-o", f"{out}/t.npz"]
for fast in ([], ["--fast"]):
    whole = best_of(pw + fast)
    chunked = best_of(["--block-bytes", str(64 << 20), *pw, *fast])
    name = "fast" if fast else "exact"
    print(f"top-10 {name}: whole {whole * 1e3:.0f} ms, in 64 MiB chunks {chunked * 1e3:.0f} ms "
          f"(chunked/whole {chunked / whole:.2f})")

"""Here (any machine): `cosim --device cpu pairwise q.npy k.npy -o m.npy` against NumPy +
OpenBLAS doing the same (normalise, `qn @ kn.T`, `np.save`), on the same 8192 x 8192 x 768
float32 inputs, each as its own process, taking turns, best wall time of 5 each (user and
sys of that run: this machine's write-back makes single runs vary by a second).
cosim writes each block of rows while the next one computes; NumPy computes, then writes.
Usage: python3 scripts/numpy-overlap.py path/to/cosim OUTDIR
"""
import os
import resource
import subprocess
import sys
import time

import numpy as np

cosim, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
r = np.random.default_rng(11)
np.save(f"{out}/q.npy", r.standard_normal((8192, 768), dtype=np.float32))
np.save(f"{out}/k.npy", r.standard_normal((8192, 768), dtype=np.float32))
numpy_job = f"""
import numpy as np
q, k = np.load("{out}/q.npy"), np.load("{out}/k.npy")
qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-8)
kn = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-8)
np.save("{out}/m_numpy.npy", qn @ kn.T)
"""


def timed(cmd):
    if True:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)


runs = {"numpy": [], "cosim": []}
for _ in range(5):
    runs["numpy"].append(timed([sys.executable, "-c", numpy_job]))
    runs["cosim"].append(timed([cosim, "--device", "cpu", "--force", "--quiet", "pairwise", f"{out}/q.npy",
                                f"{out}/k.npy", "-o", f"{out}/m_cosim.npy"]))
np_t, co_t = min(runs["numpy"]), min(runs["cosim"])
worst = float(np.max(np.abs(np.load(f"{out}/m_cosim.npy").astype(np.float64)
                            - np.load(f"{out}/m_numpy.npy").astype(np.float64))))
for name, (wall, user, sys_) in [("numpy", np_t), ("cosim", co_t)]:
    print(f"{name}: wall {wall:.2f} s (user {user:.2f} s, sys {sys_:.2f} s)")
print(f"cosim / numpy wall time: {co_t[0] / np_t[0]:.2f}; max |cosim - numpy| = {worst:.2e}")

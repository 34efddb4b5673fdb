"""There (device machine): the `cosim` binary on the GPU against itself on the CPU.

Makes small .npy inputs with NumPy, runs each subcommand with --device cuda (whole, in
forced blocks through the two-stream pipeline, and pairwise with its sets in forced chunks)
and with --device cpu, and compares the results. Prints one line per check and exits non-zero on any mismatch.
Usage: python3 scripts/device-cli-check.py device-bin/cosim OUTDIR
"""
import os
import subprocess
import sys

import numpy as np

cosim, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
r = np.random.default_rng(7)
x = r.standard_normal((4, 64, 33, 31), dtype=np.float32)
np.save(f"{out}/x.npy", x)
np.save(f"{out}/y.npy", x + 0.5 * r.standard_normal(x.shape, dtype=np.float32))
np.save(f"{out}/p.npy", r.standard_normal((1, 64, 1, 1), dtype=np.float32))
np.save(f"{out}/xh.npy", x.astype(np.float16))
q = r.standard_normal((300, 96), dtype=np.float32)
np.save(f"{out}/q.npy", q)
np.save(f"{out}/k.npy", r.standard_normal((517, 96), dtype=np.float32))
failed = 0


def run(args):
    p = subprocess.run([cosim, "--force", "--quiet", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"cosim {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")


def check(name, gpu_args, cpu_args, outputs, tol):
    global failed
    try:
        run(gpu_args)
        gpu = {o: np.load(f"{out}/{o}") for o in outputs}
        run(cpu_args)
        worst = max(float(np.nanmax(np.abs(gpu[o].astype(np.float64) - np.load(f"{out}/{o}").astype(np.float64)))) for o in outputs)
        ok = worst <= tol
        print(f"{'ok ' if ok else 'BAD'} {name}: max |gpu - cpu| = {worst:.3e} (tolerance {tol:.0e})")
        failed += not ok
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"BAD {name}: {e}")
        failed += 1


def check_npz(name, gpu_args, cpu_args, tol):
    """A .npz mode (top-k, argmax, greedy) on the GPU against the CPU. Indices may differ
    only where the CPU's values tie within the tolerance: checked against the CPU's matrix
    of the same sets, which the caller has just written to m.npy."""
    global failed
    try:
        run(gpu_args + ["-o", f"{out}/g.npz"])
        gz = dict(np.load(f"{out}/g.npz"))
        run(cpu_args + ["-o", f"{out}/g.npz"])
        cz = dict(np.load(f"{out}/g.npz"))
        worst = max(float(np.max(np.abs(gz[key].astype(np.float64) - cz[key].astype(np.float64))))
                    for key in gz if key != "indices")
        ok = worst <= tol
        if "indices" in gz:
            s = np.load(f"{out}/m.npy")
            gi, cv = gz["indices"], cz["values"]
            if gi.ndim < s.ndim:  # argmax: one index per row
                gi, cv = gi[..., None], cv[..., None]
            same = gi == cz["indices"].reshape(gi.shape)
            ok = ok and (same.all() or bool(np.all(np.abs(
                np.take_along_axis(s, gi.astype(np.int64), -1) - cv)[~same] <= tol)))
        print(f"{'ok ' if ok else 'BAD'} {name}: max |gpu - cpu| = {worst:.3e}")
        failed += not ok
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"BAD {name}: {e}")
        failed += 1


# "chunks": pairwise only, its sets cut into chunks of ~104 vectors (q: 3 chunks, k: 5), every
# chunk pair run on the GPU and merged on the host, against the CPU's whole result.
for dev_extra, label in [([], "whole"), (["--block-bytes", "1200000"], "blocks"),
                         (["--block-bytes", "40000"], "chunks")]:
    g = ["--device", "cuda", *dev_extra]
    c = ["--device", "cpu"]
    pairwise_only = label == "chunks"
    if not pairwise_only:
        along = ["along", f"{out}/x.npy", f"{out}/y.npy", "--dim", "1", "-o", f"{out}/a.npy"]
        check(f"along dim=1 ({label})", g + along, c + along, ["a.npy"], 2e-6)
        proto = ["along", f"{out}/x.npy", f"{out}/p.npy", "--dim", "1", "-o", f"{out}/a.npy"]
        check(f"along vs prototype ({label})", g + proto, c + proto, ["a.npy"], 2e-6)
        half = ["along", f"{out}/xh.npy", f"{out}/xh.npy", "--dim", "-1", "-o", f"{out}/a.npy"]
        check(f"along f16 dim=-1 ({label})", g + half, c + half, ["a.npy"], 1e-3)
        ch = ["channels", f"{out}/x.npy", f"{out}/y.npy", "--flatten-from", "2", "-o", f"{out}/c.npy",
              "--reweight", f"{out}/w.npy"]
        check(f"channels + reweight ({label})", g + ch, c + ch, ["c.npy", "w.npy"], 2e-6)
    pw = ["pairwise", f"{out}/q.npy", f"{out}/k.npy"]
    budget = ["--budget", "20000"] if label != "whole" else []
    check(f"pairwise matrix ({label})", g + pw + budget + ["-o", f"{out}/m.npy"],
          c + pw + ["-o", f"{out}/m.npy"], ["m.npy"], 2e-6)
    for fast, tol in [([], 2e-6), (["--fast"], 5e-3)]:
        name = "fast" if fast else "exact"
        check(f"pairwise row mean {name} ({label})", g + pw + fast + ["--row-mean", "-o", f"{out}/rm.npy"],
              c + pw + ["--row-mean", "-o", f"{out}/rm.npy"], ["rm.npy"], max(tol, 1e-5))
        for mode in (["--top-k", "7"], ["--argmax"], ["--greedy"]):
            check_npz(f"pairwise {' '.join(mode)} {name} ({label})", g + pw + fast + mode, c + pw + mode, tol)

# Chunks of a batched set [3, 150, 96] against one shared cols-layout set [96, 517]: the
# pipeline keeps a chunk on the device across pairs and batches (the shared set's chunks are
# the same in every batch), and gathers the cols set's columns into its pinned buffers.
np.save(f"{out}/qb.npy", r.standard_normal((3, 150, 96), dtype=np.float32))
np.save(f"{out}/kc.npy", np.ascontiguousarray(np.load(f"{out}/k.npy").T))
g, c = ["--device", "cuda", "--block-bytes", "40000"], ["--device", "cpu"]
pw = ["pairwise", f"{out}/qb.npy", f"{out}/kc.npy", "--layout-b", "cols"]
check("pairwise batched x shared cols matrix (chunks)", g + pw + ["--budget", "20000", "-o", f"{out}/m.npy"],
      c + pw + ["-o", f"{out}/m.npy"], ["m.npy"], 2e-6)
check("pairwise batched x shared cols row mean (chunks)", g + pw + ["--row-mean", "-o", f"{out}/rm.npy"],
      c + pw + ["--row-mean", "-o", f"{out}/rm.npy"], ["rm.npy"], 1e-5)
for fast, tol in [([], 2e-6), (["--fast"], 5e-3)]:
    for mode in (["--top-k", "7"], ["--argmax"], ["--greedy"]):
        name = f"pairwise batched x shared cols {' '.join(mode)} {'fast' if fast else 'exact'} (chunks)"
        check_npz(name, g + pw + fast + mode, c + pw + mode, tol)

# Shards of k on the GPU (whole, and in chunks), merged: the GPU's unsharded file exactly
# (each shard's dot products are the whole run's, bit for bit).
for dev_extra, label in [([], "whole"), (["--block-bytes", "40000"], "chunks")]:
    g = ["--device", "cuda", *dev_extra]
    for mode in (["--top-k", "7"], ["--argmax"]):
        name = f"pairwise {' '.join(mode)} in 3 shards + merge ({label})"
        try:
            pw = ["pairwise", f"{out}/q.npy", f"{out}/k.npy", *mode]
            run(g + pw + ["-o", f"{out}/whole.npz"])
            parts = []
            for i in range(3):
                run(g + pw + ["--shard", f"{i}/3", "-o", f"{out}/s{i}.npz"])
                parts.append(f"{out}/s{i}.npz")
            run(["merge", "-o", f"{out}/merged.npz", *parts])
            w, m = np.load(f"{out}/whole.npz"), np.load(f"{out}/merged.npz")
            ok = sorted(m.files) == sorted(w.files) and all(
                m[f].dtype == w[f].dtype and np.array_equal(m[f], w[f], equal_nan=True) for f in w.files)
            print(f"{'ok ' if ok else 'BAD'} {name}: merged equals whole")
            failed += not ok
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"BAD {name}: {e}")
            failed += 1
# Several GPUs (COSIM_DEVICES=N, N >= 2, set where the machine has them): B split into one
# shard per device, the per-row results merged; the matrix's row blocks dealt out in turn.
devices = int(os.environ.get("COSIM_DEVICES", "1"))
if devices >= 2:
    for dev_extra, label in [([], "whole"), (["--block-bytes", "40000"], "chunks")]:
        for spec in ("cuda:0,1", "cuda:all"):
            g = ["--device", spec, *dev_extra]
            c = ["--device", "cpu"]
            pw = ["pairwise", f"{out}/q.npy", f"{out}/k.npy"]
            check(f"pairwise matrix on {spec} ({label})", g + pw + ["--budget", "20000", "-o", f"{out}/m.npy"],
                  c + pw + ["-o", f"{out}/m.npy"], ["m.npy"], 2e-6)
            check(f"pairwise row mean on {spec} ({label})", g + pw + ["--row-mean", "-o", f"{out}/rm.npy"],
                  c + pw + ["--row-mean", "-o", f"{out}/rm.npy"], ["rm.npy"], 1e-5)
            for mode in (["--top-k", "7"], ["--argmax"], ["--greedy"]):
                check_npz(f"pairwise {' '.join(mode)} on {spec} ({label})", g + pw + mode, c + pw + mode, 2e-6)
    # A list naming a device the machine lacks: exit 1, that device named, nothing written.
    missing = f"{out}/missing.npz"
    p = subprocess.run([cosim, "--quiet", "--device", f"cuda:0,{devices}", "pairwise", f"{out}/q.npy",
                        f"{out}/k.npy", "--argmax", "-o", missing], capture_output=True, text=True)
    ok = p.returncode == 1 and f"--device cuda:{devices}" in p.stderr and not os.path.exists(missing)
    print(f"{'ok ' if ok else 'BAD'} --device cuda:0,{devices} (missing): exit {p.returncode}: {p.stderr.strip()}")
    failed += not ok
else:
    print("note: one GPU (COSIM_DEVICES unset): the several-GPU checks did not run")
sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""PyTorch's own times for the gradient cases of cosim's benchmarks, on the device, in the same
run as cosim's (scripts/device-run.sh bench): the anchors issue 12 compares against.

  python3 scripts/device-torch-anchors.py OUT.json [--small]

Cases (f32 unless named; medians of CUDA-event times after warm-ups):
  - copy: a device-to-device copy of 1 GiB, bytes read + written (the bandwidth ceiling);
  - along dim=1 backward on [64,256,128,128]: torch.autograd.grad of F.cosine_similarity,
    the graph kept (retain_graph) so only the backward is timed; bytes = read x1, x2, grad +
    write g1, g2 (what a fused backward must move);
  - pairwise matrix backward 16384×16384×768: autograd of F.normalize(a) @ F.normalize(b).T,
    exact (TF32 off), TF32, and bf16; FLOPs = the two products, 4·N·M·D.
--small shrinks every shape (to check the script itself, on any device)."""
import json
import sys

import torch
import torch.nn.functional as F


def median_ms(fn, reps=10, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    out_path = sys.argv[1]
    small = "--small" in sys.argv
    dev = torch.device("cuda")
    rows = []

    def add(case, dtype, ms, gbs=None, tflops=None):
        row = {"case": case, "dtype": dtype, "median_ms": ms, "GB/s": gbs, "TFLOP/s": tflops}
        rows.append(row)
        extra = f"{gbs:8.1f} GB/s" if gbs is not None else f"{tflops:8.1f} TFLOP/s"
        print(f"torch {case:<44} {dtype:>5} {ms:9.3f} ms {extra}", flush=True)

    n = (1 << 20) if small else (1 << 28)  # floats: 1 GiB
    src = torch.rand(n, device=dev)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    add("device-to-device copy", "f32", ms, gbs=2 * 4 * n / (ms * 1e-3) / 1e9)
    del src, dst

    shape = (4, 256, 16, 16) if small else (64, 256, 128, 128)
    x1 = torch.randn(shape, device=dev, requires_grad=True)
    x2 = torch.randn(shape, device=dev, requires_grad=True)
    out = F.cosine_similarity(x1, x2, dim=1)
    g = torch.randn_like(out)
    ms = median_ms(lambda: torch.autograd.grad(out, (x1, x2), g, retain_graph=True))
    moved = 4 * (4 * x1.numel() + g.numel())  # x1, x2, grad in; g1, g2 out
    add(f"cosine_similarity dim=1 backward {list(shape)}", "f32", ms, gbs=moved / (ms * 1e-3) / 1e9)
    del x1, x2, out, g

    nn, d = (1024, 256) if small else (16384, 768)
    for dtype, tf32, name in [
        (torch.float32, False, "f32"),
        (torch.float32, True, "f32 tf32"),
        (torch.bfloat16, False, "bf16"),
    ]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(nn, d, device=dev, dtype=dtype, requires_grad=True)
        b = torch.randn(nn, d, device=dev, dtype=dtype, requires_grad=True)
        s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
        gs = torch.randn_like(s)
        ms = median_ms(lambda: torch.autograd.grad(s, (a, b), gs, retain_graph=True), reps=5)
        add(f"normalize+matmul backward {nn}x{nn}x{d}", name, ms,
            tflops=4 * nn * nn * d / (ms * 1e-3) / 1e12)
        del a, b, s, gs
    torch.backends.cuda.matmul.allow_tf32 = False

    with open(out_path, "w") as f:
        json.dump({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "rows": rows},
                  f, indent=1)


if __name__ == "__main__":
    main()

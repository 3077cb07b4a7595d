"""NC layer vs Conv+GroupNorm vs plain Conv vs the paper's unfold algorithm, side by side.

Prints forward (inference) and forward+backward time and the peak memory of forward+backward for
ResNet-18 stage shapes (3x3, stride 1) at batch 2 and 8, plus one stride-2 shape, and at batch 2 the kinds
real architectures are made of: depthwise 3x3 and 7x7, pointwise 1x1, grouped 3x3 with 32 channels per
group (the paper's unfold baseline only for the dense ones). Every method runs
interleaved in the same process, so the ratios hold even on a noisy shared machine.

    python benchmarks/layer.py [--threads 2] [--repeats 7] [--quick] [--keep-heap]
    python benchmarks/layer.py --device cuda [--repeats 20]

--device cuda (issue 12): ResNet-50 stage shapes (3x3, stride 1) at batch 2, 8 and 32, in float32 (TF32
off) and under autocast bf16, channels_last; NC vs Conv+GroupNorm (cuDNN) forward and forward+backward
time (CUDA-synchronized medians of interleaved repeats) and the peak of torch.cuda.max_memory_allocated
over forward+backward. Targets: time <= 1.5x, memory <= 1.3x.

--keep-heap re-runs the timings with glibc told to keep freed memory (no trimming, no per-allocation
mmap), which is what tcmalloc/jemalloc or a caching allocator give: NC allocates more temporaries of
varying size than Conv+GN, and with glibc's defaults each one is page-faulted in afresh.

Peak memory is the growth of the process's peak resident set (Linux VmHWM, reset before each
measurement through /proc/self/clear_refs) over its resident set just before forward+backward. Memory is
measured in a child process with a fixed glibc mmap threshold, so that every tensor-sized allocation
is mapped and unmapped on its own and the resident set tracks live tensor memory; timings run in
this process with the normal allocator.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from ncnn_onnx.nn import NormalizedConv2d

KEEP_HEAP = {
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_TOP_PAD_": "268435456",
}

SHAPES = [  # (batch, in_ch, out_ch, size, stride, kernel, groups)
    *[(b, c, c, s, 1, 3, 1) for b in (2, 8) for c, s in ((64, 56), (128, 28), (256, 14), (512, 7))],
    (8, 64, 128, 56, 2, 3, 1),
    (2, 96, 96, 56, 1, 3, 96),
    (2, 96, 96, 56, 1, 7, 96),
    (2, 64, 256, 56, 1, 1, 1),
    (2, 128, 128, 28, 1, 3, 4),
]


class PaperUnfoldNC(nn.Module):
    """The preprint's algorithm: materialize im2col, standardize its columns, matmul."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        n, _, h, w = x.shape
        cols = F.unfold(x, c.kernel_size, padding=c.padding, stride=c.stride)  # (N, I, P)
        mu = cols.mean(1, keepdim=True)
        var = cols.var(1, unbiased=False, keepdim=True)
        cols = (cols - mu) / torch.sqrt(var + 1e-5)
        y = c.weight.flatten(1) @ cols + c.bias.reshape(1, -1, 1)
        oh = (h + 2 * c.padding[0] - c.kernel_size[0]) // c.stride[0] + 1
        return y.reshape(n, -1, oh, y.shape[-1] // oh)


def methods(cin, cout, stride, kernel=3, groups=1):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups)
    nc = NormalizedConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups)
    nc.load_state_dict(conv.state_dict())
    found = {
        "NC (ours)": nc,
        "Conv+GN": nn.Sequential(conv, nn.GroupNorm(32, cout)),
        "Conv": conv,
    }
    if groups == 1:
        found["paper unfold"] = PaperUnfoldNC(conv)
    return found


def _rss(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+) kB", f.read()).group(1)) * 1024


def peak_memory(fn) -> int:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss("VmRSS")
    fn()
    return _rss("VmHWM") - base


def train_step(mod, x, grad):
    y = mod(x)
    # A fixed random gradient: ones would vanish through GroupNorm and flatter or slow the baseline.
    y.backward(grad)
    x.grad = None
    for p in mod.parameters():
        p.grad = None


def output_gradient(shape) -> torch.Tensor:
    n, _, cout, size, stride, kernel, _ = shape
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    return torch.randn(n, cout, out, out, generator=torch.Generator().manual_seed(0))


def measure_memory(shapes) -> dict:
    """Peak memory of forward+backward per (shape, method), in this process (see the module doc)."""
    result = {}
    for shape in shapes:
        n, cin, cout, size, stride, kernel, groups = shape
        xg = torch.randn(n, cin, size, size).requires_grad_()
        grad = output_gradient(shape)
        for name, mod in methods(cin, cout, stride, kernel, groups).items():
            train_step(mod, xg, grad)  # warm: oneDNN primitives, allocator state
            result[f"{shape}|{name}"] = peak_memory(lambda: train_step(mod, xg, grad))
    return result


def memory_in_child(shapes, threads) -> dict:
    """Runs measure_memory in a fresh process whose glibc maps every tensor-sized allocation."""
    env = {k: v for k, v in os.environ.items() if k not in KEEP_HEAP}
    env.update(MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    code = (
        "import json, sys; sys.path.insert(0, %r); import layer; "
        "print(json.dumps(layer.measure_memory(%r)))" % (os.path.dirname(os.path.abspath(__file__)), shapes)
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_header(first_columns: str) -> None:
    header = first_columns + f"{'fwd ms':>9}{'fwd+bwd ms':>12}{'peak MiB':>10}{'time/GN':>9}{'mem/GN':>8}"
    print(header)
    print("-" * len(header))


CUDA_SHAPES = [(b, c, c, s, 1, 3, 1) for b in (2, 8, 32) for c, s in ((64, 56), (128, 28), (256, 14), (512, 7))]


def cuda_main(repeats: int) -> None:
    """NC vs Conv+GroupNorm on the GPU (see the module doc)."""
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to this torch build")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, median of {repeats} interleaved repeats, "
          "channels_last")
    print_header(f"{'shape (N,C->M,HxW)':<24}{'dtype':<10}{'method':<12}")
    worst_time = worst_mem = 0.0
    for shape in CUDA_SHAPES:
        n, cin, cout, size, stride, kernel, groups = shape
        for dtype in (torch.float32, torch.bfloat16):
            mods = {k: v.to(dev).to(memory_format=torch.channels_last) for k, v in
                    methods(cin, cout, stride, kernel, groups).items() if k in ("NC (ours)", "Conv+GN")}
            x = torch.randn(n, cin, size, size, device=dev).to(memory_format=torch.channels_last)
            xg = x.clone().requires_grad_()
            grad = output_gradient(shape).to(dev).to(memory_format=torch.channels_last)
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
            times = {k: ([], []) for k in mods}
            peak = {}
            for r in range(repeats + 2):  # two warm rounds: cuDNN autotuning, allocator
                for name, mod in mods.items():
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with torch.no_grad(), autocast:
                        mod(x)
                    torch.cuda.synchronize()
                    t1 = time.perf_counter()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    with autocast:
                        y = mod(xg)
                    y.backward(grad.to(y.dtype))
                    xg.grad = None
                    for p in mod.parameters():
                        p.grad = None
                    torch.cuda.synchronize()
                    t2 = time.perf_counter()
                    peak[name] = torch.cuda.max_memory_allocated() - base
                    if r >= 2:
                        times[name][0].append(t1 - t0)
                        times[name][1].append(t2 - t1)
            base_t = statistics.median(times["Conv+GN"][1])
            label = f"{n},{cin}->{cout},{size}x{size}"
            for name in mods:
                fwd = statistics.median(times[name][0]) * 1e3
                fb = statistics.median(times[name][1])
                print(f"{label:<24}{str(dtype).replace('torch.', ''):<10}{name:<12}{fwd:>9.3f}{fb * 1e3:>12.3f}"
                      f"{peak[name] / 2**20:>10.1f}{fb / base_t:>9.2f}{peak[name] / max(peak['Conv+GN'], 1):>8.2f}")
                label = ""
            worst_time = max(worst_time, statistics.median(times["NC (ours)"][1]) / base_t)
            worst_mem = max(worst_mem, peak["NC (ours)"] / max(peak["Conv+GN"], 1))
    print(f"\nworst NC / Conv+GN: forward+backward time {worst_time:.2f}x (target <= 1.5x), "
          f"peak memory {worst_mem:.2f}x (target <= 1.3x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="batch 2 shapes only, 3 repeats")
    parser.add_argument("--keep-heap", action="store_true", help="time with glibc's heap trimming off")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        return cuda_main(args.repeats)
    if args.keep_heap and os.environ.get("MALLOC_TRIM_THRESHOLD_") is None:
        env = dict(os.environ, **KEEP_HEAP)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    shapes = [s for s in SHAPES if s[0] == 2] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats
    memory = memory_in_child(shapes, args.threads)
    heap = "glibc heap kept (--keep-heap)" if os.environ.get("MALLOC_TRIM_THRESHOLD_") else "glibc defaults"
    print(f"torch {torch.__version__}, {args.threads} threads, median of {repeats} interleaved repeats, {heap}")
    print_header(f"{'shape (N,C->M,HxW,s,k,g)':<30}{'method':<14}")
    worst_time = worst_mem = 0.0
    for shape in shapes:
        n, cin, cout, size, stride, kernel, groups = shape
        x = torch.randn(n, cin, size, size)
        xg = x.clone().requires_grad_()
        grad = output_gradient(shape)
        mods = methods(cin, cout, stride, kernel, groups)
        times = {k: ([], []) for k in mods}
        for _ in range(repeats + 1):  # the first round warms caches and oneDNN primitives
            for name, mod in mods.items():
                with torch.no_grad():
                    t0 = time.perf_counter()
                    mod(x)
                    t1 = time.perf_counter()
                train_step(mod, xg, grad)
                t2 = time.perf_counter()
                times[name][0].append(t1 - t0)
                times[name][1].append(t2 - t1)
        mem = {name: memory[f"{shape}|{name}"] for name in mods}
        base_t = statistics.median(times["Conv+GN"][1][1:])
        label = f"{n},{cin}->{cout},{size}x{size},s{stride},{kernel}x{kernel},g{groups}"
        for name in mods:
            fwd = statistics.median(times[name][0][1:]) * 1e3
            fb = statistics.median(times[name][1][1:])
            print(f"{label:<30}{name:<14}{fwd:>9.2f}{fb * 1e3:>12.2f}{mem[name] / 2**20:>10.1f}"
                  f"{fb / base_t:>9.2f}{mem[name] / mem['Conv+GN']:>8.2f}")
            label = ""
        worst_time = max(worst_time, statistics.median(times["NC (ours)"][1][1:]) / base_t)
        worst_mem = max(worst_mem, mem["NC (ours)"] / mem["Conv+GN"])
    print(f"\nworst NC / Conv+GN: forward+backward time {worst_time:.2f}x (target <= 1.5x), "
          f"peak memory {worst_mem:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()

"""NormalizedConv node vs onnxruntime's own CPU Conv vs the standard-op fallback, side by side.

Three single-node models on the same input, weights, bias, pads and stride:

- NC:       the `ncnn_onnx::NormalizedConv` node run by the custom-op library (CPU kernels);
- Conv:     a standard ONNX `Conv` in plain onnxruntime (MLAS; with the default optimization level
            onnxruntime rewrites it to its NCHWc convolution, reorder nodes included);
- fallback: the same NC model, with its embedded standard-op function, in plain onnxruntime without the
            library, so onnxruntime inlines the function body.

ResNet-18 stage shapes (3x3, stride 1, pad 1) plus one stride-2 shape, with a bias as in the paper's
layers; two of them again without one (a convolution followed by a norm has none, so every converted model
runs that way); and the kinds real architectures are made of: depthwise 3x3 and 7x7 (MobileNet,
ConvNeXt), pointwise 1x1 and a grouped 3x3 with 32 channels per group (RegNet). Batch 1 and 8, 1 and 2
intra-op threads. Every session of a shape (three paths x thread counts) runs once per round, in a
rotating order, and each time is the median over the rounds, so the ratios hold on a noisy shared
machine. Cheap shapes get more rounds (up to a time budget per shape and batch).

Intra-op threads do not spin (session.intra_op.allow_spinning=0) unless --spin: in an interleaved run a
spinning pool of the session that just ran would compete with the next one for the cores; the setting is
the same for all three paths. Target: NC <= 1.3x Conv.

    python benchmarks/ort_cpu.py [--repeats 7] [--budget 5] [--threads 1,2] [--batches 1,8] [--spin] [--quick]
                                 [--only depthwise,pointwise,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ncnn_onnx import runtime
from ncnn_onnx.export import DOMAIN, OP_TYPE, VERSION, build_function

# (in_ch, out_ch, size, stride, kernel, groups, bias)
SHAPES = [
    (64, 64, 56, 1, 3, 1, True),
    (128, 128, 28, 1, 3, 1, True),
    (256, 256, 14, 1, 3, 1, True),
    (512, 512, 7, 1, 3, 1, True),
    (64, 128, 56, 2, 3, 1, True),
    (64, 64, 56, 1, 3, 1, False),
    (512, 512, 7, 1, 3, 1, False),
    (96, 96, 56, 1, 3, 96, False),  # depthwise 3x3
    (96, 96, 56, 1, 7, 96, False),  # depthwise 7x7
    (64, 256, 56, 1, 1, 1, False),  # pointwise
    (128, 128, 28, 1, 3, 4, False),  # grouped, 32 channels per group
]
# The function body needs opset >= 18; a plain Conv reads the same at any opset.
OPSET = 18
TARGET = 1.3
# The fallback must reproduce the kernel well within the parity bar (docs/architecture.md), or a path is wrong.
AGREEMENT = 1e-3


def single_node(op: str, w: np.ndarray, b, stride: int, groups: int) -> bytes:
    """Y = op(X, W[, B]) with "same" pads; the NC model carries the fallback function, as exported files
    do, and names an absent B with the empty string, as the exporter writes it."""
    nc = op == OP_TYPE
    k = w.shape[-1]
    node = helper.make_node(op, ["X", "W", "B" if b is not None else ""], ["Y"], domain=DOMAIN if nc else "",
                            name=op.lower(), kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride],
                            group=groups)
    initializers = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    graph = helper.make_graph(
        [node], "bench", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(DOMAIN, VERSION)] if nc else [])
    model = helper.make_model(graph, opset_imports=opsets,
                              functions=[build_function(OPSET)] if nc else None)
    model.ir_version = 10  # what onnxruntime reads, whichever onnx wrote it
    return model.SerializeToString()


def options(threads: int, spin: bool) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts


def sessions(cin, cout, stride, kernel, groups, bias, threads, spin=False):
    """{(path, threads): session} for one shape; the same weights in every model."""
    rng = np.random.default_rng(0)
    fan_in = kernel * kernel * cin // groups
    w = (rng.standard_normal((cout, cin // groups, kernel, kernel)) / np.sqrt(fan_in)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) if bias else None
    nc_bytes = single_node(OP_TYPE, w, b, stride, groups)
    conv_bytes = single_node("Conv", w, b, stride, groups)
    cpu = ["CPUExecutionProvider"]
    result = {}
    for t in threads:
        result["NC", t] = ort.InferenceSession(nc_bytes, runtime.session_options(options(t, spin)), providers=cpu)
        result["Conv", t] = ort.InferenceSession(conv_bytes, options(t, spin), providers=cpu)
        result["fallback", t] = ort.InferenceSession(nc_bytes, options(t, spin), providers=cpu)
    return result


def cpu_backend() -> str:
    """The library's CPU backend as runtime/cpu/isa.cc chooses it (the library does not report it)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    cap = os.environ.get("NCNN_ONNX_CPU_ISA", "")
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c"} <= flags
    avx2 = {"avx2", "fma", "f16c"} <= flags
    if cap not in ("portable", "avx2") and avx512:
        name = "avx512"
    elif cap != "portable" and avx2:
        name = "avx2"
    else:
        name = "portable"
    return f"{name}; CPU has avx2={avx2} avx512={avx512}, NCNN_ONNX_CPU_ISA={cap or 'unset'}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(sess: dict, x: np.ndarray, repeats: int, max_repeats: int, budget: float) -> dict:
    """Median milliseconds per session; one round runs every session once, in a rotating order.

    At least `repeats` rounds, more (up to `max_repeats`) while they fit in `budget` seconds."""
    keys = list(sess)
    feed = {"X": x}
    start = time.perf_counter()
    outputs = {k: s.run(None, feed)[0] for k, s in sess.items()}  # warm: packing, arenas, thread pools
    round_time = time.perf_counter() - start
    rounds = max(repeats, min(max_repeats, int(budget / max(round_time, 1e-6))))
    times = {k: [] for k in keys}
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            start = time.perf_counter()
            sess[key].run(None, feed)
            times[key].append(time.perf_counter() - start)
    # NC and Conv differ by construction; NC and its fallback must agree (a wrong path shows here).
    scale = np.abs(outputs[keys[0]]).max()
    nc_fb = max(np.abs(outputs["NC", t] - outputs["fallback", t]).max() / scale for _, t in keys)
    return {"ms": {k: statistics.median(v) * 1e3 for k, v in times.items()}, "nc_vs_fallback": nc_fb,
            "rounds": rounds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds per shape and batch, at least")
    parser.add_argument("--budget", type=float, default=5.0,
                        help="seconds per shape and batch that extra rounds (up to 25) may fill")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts, comma-separated")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated")
    parser.add_argument("--spin", action="store_true", help="let intra-op threads spin (onnxruntime's default)")
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 3 rounds, no extra rounds")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]
    repeats = 3 if args.quick else args.repeats
    max_repeats, budget = (3, 0.0) if args.quick else (max(25, repeats), args.budget)

    print(f"onnxruntime {ort.__version__}, {cpu_model()}, {os.cpu_count()} logical CPUs")
    print(f"ncnn_onnx CPU backend: {cpu_backend()}")
    rounds = f"{repeats}" if max_repeats == repeats else f"{repeats} to {max_repeats}"
    print(f"median of {rounds} interleaved rounds, float32, kxk pad k//2, inter-op threads 1, "
          f"default graph optimization, intra-op spinning {'on' if args.spin else 'off'}")
    header = (f"{'shape (C->M,HxW,s,k,g,b)':<30}{'batch':>6}{'thr':>4}{'NC ms':>9}{'Conv ms':>9}{'fallback ms':>13}"
              f"{'NC/Conv':>9}{'fb/Conv':>9}{'rounds':>8}")
    print(header)
    print("-" * len(header))
    ratios = {}
    worst_agreement = 0.0
    started = time.perf_counter()
    for cin, cout, size, stride, kernel, groups, bias in SHAPES:
        sess = sessions(cin, cout, stride, kernel, groups, bias, threads, args.spin)
        for n in batches:
            x = np.random.default_rng(1).standard_normal((n, cin, size, size)).astype(np.float32)
            result = measure(sess, x, repeats, max_repeats, budget)
            ms = result["ms"]
            worst_agreement = max(worst_agreement, result["nc_vs_fallback"])
            for t in threads:
                label = f"{cin}->{cout},{size}x{size},s{stride},{kernel}x{kernel},g{groups},{'b' if bias else '-'}"
                nc, conv, fb = ms["NC", t], ms["Conv", t], ms["fallback", t]
                ratios[label, n, t] = nc / conv
                print(f"{label:<30}{n:>6}{t:>4}{nc:>9.2f}{conv:>9.2f}{fb:>13.2f}{nc / conv:>9.2f}{fb / conv:>9.2f}"
                      f"{result['rounds']:>8}", flush=True)
    values = list(ratios.values())
    worst_key = max(ratios, key=ratios.get)
    met = sum(v <= TARGET for v in values)
    print(f"\nNC vs fallback output: max|dY| / max|Y| = {worst_agreement:.1e}"
          f"{'' if worst_agreement <= AGREEMENT else f'  (ABOVE {AGREEMENT:.0e}: a path is wrong)'}")
    print(f"NC / Conv: worst {max(values):.2f}x ({worst_key[0]}, batch {worst_key[1]}, {worst_key[2]} thr), "
          f"median {statistics.median(values):.2f}x, {met}/{len(values)} rows within the target "
          f"<= {TARGET}x ({'met' if max(values) <= TARGET else 'missed'}); "
          f"{time.perf_counter() - started:.0f} s")
    by_threads = ", ".join(
        f"{t} thr {statistics.median(v for k, v in ratios.items() if k[2] == t):.2f}x" for t in threads)
    print(f"median NC / Conv by thread count: {by_threads}")
    return 0 if worst_agreement <= AGREEMENT else 1


if __name__ == "__main__":
    raise SystemExit(main())

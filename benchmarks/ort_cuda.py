"""NormalizedConv node vs onnxruntime's own CUDA Conv (cuDNN) on the same shapes and weights.

ResNet-18 stage shapes (3x3, stride 1, pad 1) at batch 1 and 32, float32 and float16. Inputs and
outputs stay on the GPU (IOBinding), so the timings are the kernels', not host copies. Every pair runs
interleaved in one process; the ratio NC / Conv is what to read.

onnxruntime's CUDA Conv lets cuDNN use TF32 tensor cores for float32 by default (10-bit mantissa), which
would not meet NC's float32 parity bar; the float32 rows therefore also time Conv with use_tf32=0, the
like-for-like baseline for NC's exact float32 product.

    python benchmarks/ort_cuda.py [--repeats 50] [--batches 1,32]

Needs a CUDA device, onnxruntime-gpu and the library built with CUDA kernels; says what is missing
otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ncnn_onnx import runtime

STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
CUDA_NO_TF32 = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def single_node(op: str, domain: str, w: np.ndarray, b: np.ndarray) -> bytes:
    node = helper.make_node(op, ["X", "W", "B"], ["Y"], domain=domain, pads=[1, 1, 1, 1], name=op.lower())
    elem = TYPES[w.dtype.type]
    graph = helper.make_graph(
        [node], "bench", [helper.make_tensor_value_info("X", elem, None)],
        [helper.make_tensor_value_info("Y", elem, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ncnn_onnx", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what every onnxruntime >= 1.20 reads, whatever this onnx writes by default
    return model.SerializeToString()


def bound_run(session: ort.InferenceSession, x: np.ndarray, out_shape):
    """A callable running the session on GPU-resident input and output."""
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_gpu = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, x.dtype, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("X", x_gpu)
    binding.bind_ortvalue_output("Y", y_gpu)
    return lambda: session.run_with_iobinding(binding)


def missing() -> str | None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if not runtime.cuda_kernels_built():
        return "the ncnn_onnx library was built without CUDA kernels"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"benchmarks/ort_cuda.py: nothing measured: {reason}")
        return 1
    batches = [int(b) for b in args.batches.split(",")]
    print(f"onnxruntime {ort.__version__}, median of {args.repeats} interleaved runs, GPU-resident I/O")
    print(f"{'dtype':<8}{'shape (N,C,HxW)':<20}{'NC ms':>9}{'Conv ms':>9}{'NC/Conv':>9}"
          f"{'Conv fp32 ms':>14}{'NC/Conv fp32':>14}")
    worst = 0.0
    worst_exact = 0.0
    for dtype in (np.float32, np.float16):
        for n in batches:
            for c, size in STAGES:
                rng = np.random.default_rng(0)
                x = rng.standard_normal((n, c, size, size)).astype(dtype)
                w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(dtype)
                b = rng.standard_normal(c).astype(dtype)
                nc = runtime.InferenceSession(single_node("NormalizedConv", "ncnn_onnx", w, b), providers=CUDA)
                conv = ort.InferenceSession(single_node("Conv", "", w, b), providers=CUDA)
                runs = {"nc": bound_run(nc, x, x.shape), "conv": bound_run(conv, x, x.shape)}
                if dtype == np.float32:
                    exact = ort.InferenceSession(single_node("Conv", "", w, b), providers=CUDA_NO_TF32)
                    runs["exact"] = bound_run(exact, x, x.shape)
                times = {k: [] for k in runs}
                for _ in range(5):
                    for run in runs.values():
                        run()
                for _ in range(args.repeats):
                    for key, run in runs.items():
                        start = time.perf_counter()
                        run()  # returns once the outputs are ready on the device
                        times[key].append(time.perf_counter() - start)
                t_nc, t_conv = (statistics.median(times[k]) for k in ("nc", "conv"))
                worst = max(worst, t_nc / t_conv)
                exact_columns = ""
                if "exact" in times:
                    t_exact = statistics.median(times["exact"])
                    worst_exact = max(worst_exact, t_nc / t_exact)
                    exact_columns = f"{t_exact * 1e3:>14.3f}{t_nc / t_exact:>14.2f}"
                print(f"{np.dtype(dtype).name:<8}{f'{n},{c},{size}x{size}':<20}{t_nc * 1e3:>9.3f}"
                      f"{t_conv * 1e3:>9.3f}{t_nc / t_conv:>9.2f}{exact_columns}")
    print(f"\nworst NC / Conv: {worst:.2f}x (target <= 1.5x); float32 against Conv without TF32: "
          f"{worst_exact:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the C++ example, run an exported NC model through it, and check it against Python.

    python examples/cpp_inference/run_example.py [--build-dir build/cpp_inference] [--batch 8]

Exports the examples' small NC ResNet (random weights, seed 0), writes a batch of scikit-learn digits as
raw float32, configures and builds nc_infer with CMake, runs it with the custom-op library, and compares
its outputs with ncnn_onnx.runtime.InferenceSession (the same kernels from Python) and with eager PyTorch.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # examples/, for common.py when run as a script

from common import digits, small_resnet  # noqa: E402


def cmake_program() -> str | None:
    """cmake on PATH, else the one the `cmake` Python package installed (the Makefile installs it)."""
    found = shutil.which("cmake")
    if found:
        return found
    try:
        import cmake
    except ImportError:
        return None
    candidate = pathlib.Path(cmake.CMAKE_BIN_DIR) / "cmake"
    return str(candidate) if candidate.is_file() else None


def cxx_compiler() -> str | None:
    """What CMake would use: $CXX, else the first of c++, g++, clang++ on PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"].split()[0])
    return next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None)


def missing_tools() -> str | None:
    """Why the program cannot be built here, or None when it can."""
    if cmake_program() is None:
        return "cmake not found (on PATH or as the cmake Python package)"
    if cxx_compiler() is None:
        return "no C++ compiler found ($CXX, c++, g++ or clang++)"
    return None


def _check(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"{what} failed ({' '.join(command)}):\n{tail}")


def build(build_dir: pathlib.Path) -> pathlib.Path:
    """Configure and build nc_infer in build_dir; the path of the executable."""
    cmake = cmake_program()
    if cmake is None:
        raise RuntimeError(missing_tools())
    _check([cmake, "-S", str(HERE), "-B", str(build_dir), f"-DPython3_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release"], "configuring the C++ example")
    _check([cmake, "--build", str(build_dir), "--parallel", "2"], "building the C++ example")
    return build_dir / "nc_infer"


def run_program(binary, model, library, input_path, shape, output_path) -> str:
    """Runs nc_infer; its stdout. Raises with the program's error line when it fails."""
    command = [str(binary), str(model), str(library), str(input_path), "--shape", ",".join(map(str, shape)),
               "--output", str(output_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nc_infer exited with {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=str(REPO / "build" / "cpp_inference"))
    parser.add_argument("--batch", type=int, default=8, help="digits images in the input")
    parser.add_argument("--width", type=int, default=16, help="channels of the ResNet's first stage")
    args = parser.parse_args(argv)

    from ncnn_onnx.export import export
    from ncnn_onnx.parity import parity_error
    from ncnn_onnx.runtime import InferenceSession, get_library_path

    start = time.perf_counter()
    binary = build(pathlib.Path(args.build_dir).resolve())
    print(f"built {binary} in {time.perf_counter() - start:.1f} s")

    torch.manual_seed(0)
    model = small_resnet(width=args.width).eval()
    _, _, x_val, y_val = digits()
    x = x_val[: args.batch].contiguous()
    with torch.no_grad():
        eager = model(x).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        model_path, input_path, output_path = tmp / "nc_resnet.onnx", tmp / "input.f32", tmp / "output.f32"
        export(model, (x[:1],), str(model_path))
        # numpy writes in the host's byte order; nc_infer reads little-endian and refuses big-endian hosts.
        x.numpy().astype("<f4").tofile(input_path)
        library = get_library_path()
        stdout = run_program(binary, model_path, library, input_path, x.shape, output_path)
        print(stdout, end="")
        cpp = np.fromfile(output_path, dtype="<f4")

        session = InferenceSession(str(model_path))
        python = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]

    if cpp.size != python.size:
        raise RuntimeError(f"nc_infer wrote {cpp.size} values; the Python session gives {python.shape}")
    cpp = cpp.reshape(python.shape)
    result = {
        "max_abs_diff_python": float(np.max(np.abs(cpp - python))),
        "bit_identical": bool(np.array_equal(cpp, python)),
        "parity_python": parity_error(cpp, python),
        "parity_eager": parity_error(cpp, eager),
        "same_classes": bool(np.array_equal(cpp.argmax(1), eager.argmax(1))),
        "labels": y_val[: args.batch].tolist(),
    }
    print(f"C++ vs Python InferenceSession: max |diff| = {result['max_abs_diff_python']:.3g}"
          f" ({'bit-identical' if result['bit_identical'] else 'not bit-identical'})")
    print(f"C++ vs eager PyTorch: parity error {result['parity_eager']:.3g}"
          f" (max|dY| / max|Y|; the bar is in ncnn_onnx/parity.py)")
    return result


if __name__ == "__main__":
    main()

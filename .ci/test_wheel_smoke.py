"""CI's packaging check (`make smoke`, after `make test`): the wheel as a user gets it.

1. The sources of HEAD are exported with `git archive` (a clean checkout: no build tree, no venv) and built
   into a CPU-only wheel (NCNN_ONNX_CUDA=OFF, the kind a package index takes).
2. The wheel is installed into a fresh venv with its dependencies only: no torch, no onnxscript, no Pillow.
3. A model exported here (in the development venv, which has torch) is served there with the library and
   with the fallback function, and both agree with eager PyTorch within the parity bar; the commands that
   need an extra say which.

Run with the development venv's Python (`make smoke`); the fresh venv gets the rest from the package index.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLATFORM = sysconfig.get_platform().replace("-", "_").replace(".", "_")  # linux_x86_64
OUTSIDE = pathlib.Path("/")


def run(args, *, env=None, cwd=None, check=True, timeout=900):
    """Runs a command; those of the fresh venv run outside the source tree (which `python -c` would import
    ncnn_onnx from) and without PYTHONPATH."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if cwd is None:
        cwd = OUTSIDE
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="module")
def wheel(work) -> pathlib.Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True,
                          check=True).stdout
    source = work / "src"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(source, filter="data")
    assert not (source / "build").exists() and not (source / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCNN_ONNX_", "ONNXRUNTIME_"))}
    env["NCNN_ONNX_CUDA"] = "OFF"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work / "dist",
         source], env=env)
    wheels = list((work / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(work, wheel) -> pathlib.Path:
    """A fresh venv with the wheel and its dependencies only."""
    target = work / "venv"
    run([sys.executable, "-m", "venv", target])
    run([target / "bin/python", "-m", "pip", "install", "-q", wheel])
    return target


@pytest.fixture(scope="module")
def model(work):
    """(model.onnx, input .npy, eager float64 output): exported here, where torch is."""
    sys.path.insert(0, str(ROOT / "examples"))
    import torch
    from common import small_resnet

    from ncnn_onnx.export import export

    torch.manual_seed(0)
    net = small_resnet().eval()
    x = torch.randn(2, 1, 16, 16)
    path = work / "model.onnx"
    export(net, (x,), str(path))
    with torch.no_grad():
        reference = net.double()(x.double()).numpy()
    np.save(work / "x.npy", x.numpy())
    return path, work / "x.npy", reference


def test_wheel_is_portable_and_cpu_only(wheel):
    import ncnn_onnx

    assert wheel.name == f"ncnn_onnx-{ncnn_onnx.__version__}-py3-none-{PLATFORM}.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = json.loads(zf.read("ncnn_onnx/runtime/build_info.json"))
        metadata = zf.read(f"ncnn_onnx-{ncnn_onnx.__version__}.dist-info/METADATA").decode()
    assert "ncnn_onnx/runtime/libncnn_onnx_ops.so" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
    assert info["cuda"] is None and info["cuda_option"] == "OFF"
    assert info["static_cxx_runtime"] is True
    assert "Requires-Dist: onnxruntime>=1.18" in metadata
    assert 'Requires-Dist: pillow>=9; extra == "images"' in metadata


def test_fresh_venv_has_no_torch(venv):
    done = run([venv / "bin/python", "-c", "import torch"], check=False)
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


def test_info_from_the_wheel(venv):
    import ncnn_onnx

    out = run([venv / "bin/ncnn-onnx", "info"]).stdout
    fields = {line[:18].strip(): line[18:].strip() for line in out.splitlines()}
    assert fields["ncnn_onnx"] == ncnn_onnx.__version__
    assert fields["torch"] == "not installed"
    assert fields["library"].startswith(str(venv)) and fields["library"].endswith("libncnn_onnx_ops.so")
    assert fields["CUDA kernels"] == "not built (NCNN_ONNX_CUDA=OFF)"
    assert fields["C++ runtime"] == "libstdc++ linked in"


@pytest.mark.parametrize("library", [True, False], ids=["library", "fallback"])
def test_serving_matches_eager(venv, model, work, library):
    from ncnn_onnx.parity import parity_error, bar

    path, x, reference = model
    out = work / ("out-library" if library else "out-fallback")
    run([venv / "bin/ncnn-onnx", "run", path, x, "--output-dir", out] + ([] if library else ["--no-library"]))
    (result,) = list(out.glob("x.*.npy"))
    y = np.load(result)
    assert y.shape == reference.shape
    assert parity_error(y, reference) <= bar(y.dtype)


def test_python_api_serves_without_torch(venv, model):
    path, x, _ = model
    code = (
        "import sys, numpy as np\n"
        "from ncnn_onnx.runtime import InferenceSession\n"
        f"s = InferenceSession({str(path)!r})\n"
        f"y = s.run(None, {{s.get_inputs()[0].name: np.load({str(x)!r})}})[0]\n"
        "assert 'torch' not in sys.modules\n"
        "print(y.shape)\n"
    )
    assert run([venv / "bin/python", "-c", code]).stdout.strip() == "(2, 10)"


def test_missing_extras_are_named(venv, model, work):
    done = run([venv / "bin/python", "-c", "import ncnn_onnx.nn"], check=False)
    assert done.stderr.strip().splitlines()[-1] == (
        'ncnn_onnx._extras.MissingExtraError: ncnn_onnx.nn needs torch, which is not installed: '
        'pip install "ncnn_onnx[torch]"')
    done = run([venv / "bin/ncnn-onnx", "export", "m:f", "-o", work / "x.onnx", "--input-shape", "1,3,8,8"],
               check=False)
    assert done.returncode == 1 and done.stderr.strip() == (
        'ncnn-onnx export: error: ncnn-onnx export needs torch, which is not installed: '
        'pip install "ncnn_onnx[export]"')


def test_images_extra_runs_images(venv, wheel, model, work):
    from PIL import Image

    path, _, _ = model
    image = work / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)).save(image)
    done = run([venv / "bin/ncnn-onnx", "run", path, image, "--output-dir", work / "img"], check=False)
    assert done.returncode == 1 and done.stderr.strip() == (
        'ncnn-onnx run: error: reading the image digit.png needs Pillow, which is not installed: '
        'pip install "ncnn_onnx[images]"')
    run([venv / "bin/python", "-m", "pip", "install", "-q", f"{wheel}[images]"])
    out = run([venv / "bin/ncnn-onnx", "run", path, image, "--output-dir", work / "img"]).stdout
    assert "top-" in out and (work / "img").is_dir()


def test_auditwheel_sees_no_libstdcxx(wheel, work):
    """What a release pipeline's `auditwheel show` says for this build host (informational, printed), and
    that the wheel asks the system for no libstdc++: its only external libraries are glibc's."""
    tools = work / "auditwheel-venv"
    run([sys.executable, "-m", "venv", tools])
    run([tools / "bin/python", "-m", "pip", "install", "-q", "auditwheel"])
    out = run([tools / "bin/auditwheel", "show", wheel]).stdout
    print(out)
    words = " ".join(out.split())
    assert "libstdc++" not in words and "libgcc_s" not in words
    assert "is consistent with the following platform tag: \"manylinux_2_" in words, words

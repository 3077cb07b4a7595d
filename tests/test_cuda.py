"""ncnn_onnx.functional / ncnn_onnx.nn on a CUDA device (issue 12, GPU parity). Skipped without one.

Written without a GPU at hand: each test compares the CUDA result with the float64 CPU reference under
the parity bar of ncnn_onnx.parity, as the CPU tests do."""

import os

import pytest
import torch

# Deterministic cuBLAS (bmm in the layer) needs this set before the first cuBLAS handle exists.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from ncnn_onnx import functional as ncf
from ncnn_onnx.nn import NormalizedConv2d
from reference import assert_parity, nc_reference, photo_scales, photographs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")


@pytest.fixture(autouse=True)
def no_tf32():
    """float32 parity needs true float32 products: TF32 would miss the 1e-4 bar."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("scale_name", ["raw", "unit", "standardized"])
@pytest.mark.parametrize("kernel,groups,stride", [(3, 1, 1), (5, 1, 2), (3, 3, 1)])
def test_float32_matches_float64_reference(scale_name, kernel, groups, stride):
    x64 = torch.from_numpy(photo_scales(photographs(size=40, count=4))[scale_name])
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(6, 3 // groups, kernel, kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x, w32, b32 = x64.float(), w.float(), b.float()
    y = ncf.normalized_conv2d(x.cuda(), w32.cuda(), b32.cuda(), stride, kernel // 2, groups=groups)
    ref = nc_reference(x.double(), w32.double(), b32.double(), stride, kernel // 2, groups=groups)
    assert y.is_cuda
    assert_parity(y.cpu(), ref, torch.float32)


def test_gradcheck_float64_on_cuda():
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(2, 4, 6, 5, generator=gen, dtype=torch.float64) + 1).cuda().requires_grad_()
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64).cuda().requires_grad_()
    b = torch.randn(3, generator=gen, dtype=torch.float64).cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: ncf.normalized_conv2d(*a, padding=1, groups=2), (x, w, b))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_float32_statistics(dtype):
    photos = torch.from_numpy(photographs(size=24, count=2)).float()
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(7))
    with torch.autocast("cuda", dtype=dtype):
        y = ncf.normalized_conv2d(photos.cuda(), w.cuda(), padding=1)
    assert y.dtype == dtype
    assert_parity(y.cpu(), nc_reference(photos.to(dtype), w.to(dtype), pads=1), dtype)  # bar 1e-2


def test_autocast_training_step_gradients():
    torch.manual_seed(0)
    layer = NormalizedConv2d(3, 8, 3, padding=1).cuda()
    x = torch.randn(2, 3, 16, 16, device="cuda")
    layer(x).square().mean().backward()
    ref = layer.weight.grad.clone()
    layer.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = layer(x).float().square().mean()
    loss.backward()
    assert layer.weight.grad.dtype == torch.float32
    assert_parity(layer.weight.grad.cpu(), ref.double().cpu(), torch.bfloat16)


def test_channels_last_matches_contiguous_forward_and_backward():
    torch.manual_seed(1)
    layer = NormalizedConv2d(8, 16, 3, padding=1, groups=2).cuda()
    x = torch.randn(4, 8, 14, 14, device="cuda")
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        layer.zero_grad()
        xi = x.to(memory_format=fmt).requires_grad_()
        y = layer.to(memory_format=fmt)(xi)
        if fmt is torch.channels_last:
            assert y.is_contiguous(memory_format=torch.channels_last)
        y.square().sum().backward()
        results.append((y.detach().double(), xi.grad.double(), layer.weight.grad.double()))
    for a, b in zip(*results):
        assert_parity(a.cpu(), b.cpu(), torch.float32)


def test_deterministic_mode_repeats_bit_for_bit():
    torch.manual_seed(2)
    layer = NormalizedConv2d(4, 8, 3, padding=1).cuda()
    x = torch.randn(2, 4, 12, 12, device="cuda")
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=False)
    try:
        runs = []
        for _ in range(2):
            layer.zero_grad()
            xi = x.clone().requires_grad_()
            y = layer(xi)
            y.square().sum().backward()
            runs.append((y.detach(), xi.grad, layer.weight.grad.clone()))
    finally:
        torch.use_deterministic_algorithms(old)
    for a, b in zip(*runs):
        assert torch.equal(a, b)

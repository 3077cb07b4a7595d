"""ncnn_onnx.conditioning: the per-layer float32 error and near-flat patch counts that `ncnn-onnx check`
reports where a network is ill-conditioned in float32 (the check itself: tests/cli/test_check_command.py)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ncnn_onnx import NormalizedConv2d
from ncnn_onnx.conditioning import NEAR_FLAT, _near_flat_patches, layer_conditions, within_spread, worst_layer


def _patch_variances(module, x):
    """Every patch's variance by explicit patches (float64), the way tests/reference.py builds them."""
    pad = module.padding[0]
    cols = torch.nn.functional.unfold(x, module.kernel_size, padding=pad, stride=module.stride,
                                      dilation=module.dilation)  # (N, C*K, P)
    n, _, p = cols.shape
    groups = module.groups
    cols = cols.reshape(n, groups, -1, p)
    return cols.var(2, unbiased=False)


def test_near_flat_counts_match_explicit_patches():
    gen = torch.Generator().manual_seed(0)
    layer = NormalizedConv2d(6, 4, 3, padding=1, stride=2, groups=2)
    x = 200 + 0.001 * torch.randn(2, 6, 9, 9, generator=gen, dtype=torch.float64)
    x[:, :, 5:] = torch.rand(2, 6, 4, 9, generator=gen, dtype=torch.float64) * 255
    near, total, smallest = _near_flat_patches(layer, x)
    var = _patch_variances(layer, x)
    assert total == var.numel()
    assert near == int((var < NEAR_FLAT * layer.eps).sum()) and 0 < near < total
    assert abs(smallest - float(var.min()) / layer.eps) <= 1e-6 * max(smallest, 1.0)


def test_the_amplifying_layer_is_the_worst():
    torch.manual_seed(0)
    mix = nn.Conv2d(2, 8, 1, bias=False)
    with torch.no_grad():
        mix.weight[:, 0] = 1000.0
        mix.weight[:, 1] = 3e-3 * torch.randn(8, 1, 1)
    model = nn.Sequential(NormalizedConv2d(2, 2, 3, padding=1), mix, NormalizedConv2d(8, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2).reshape(2, 2, 1, 1).expand(2, 2, 3, 3) / 9)
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    conditions = layer_conditions(model, copy.deepcopy(model).double(), [x])
    assert [c.name for c in conditions] == ["0", "2"]
    worst = worst_layer(conditions)
    assert worst.name == "2" and worst.near_flat == worst.patches == 36
    assert worst.growth > 1000 > conditions[0].growth
    assert "2 (NormalizedConv2d 8->4, 1x1)" in worst.text()


def test_within_spread():
    assert within_spread(5e-5, 0.0, 1e-4)  # within the bar whatever eager does
    assert within_spread(5e-3, 1e-3, 1e-4)
    assert not within_spread(2e-2, 1e-3, 1e-4)
    assert worst_layer([]) is None

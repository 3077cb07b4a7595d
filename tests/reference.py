"""The tests' one helper for the parity contract (docs/architecture.md, "Numerics"; the bar itself is
ncnn_onnx.parity, shared with `ncnn-onnx check`) and the float64 reference.

The reference is deliberately naive and independent of the package: it materializes every patch with
`Tensor.unfold`, in float64, and standardizes it with a two-pass mean and variance.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ncnn_onnx.parity import bar, parity_error as _parity_error


def parity_error(y, y_ref) -> float:
    """max|y - y_ref| / max|y_ref|, the figure the parity bar bounds (ncnn_onnx.parity)."""
    return _parity_error(_numpy(y), _numpy(y_ref))


def assert_parity(y, y_ref, dtype) -> float:
    """Asserts the contract's bar for `dtype` (a torch or NumPy dtype): the tolerance lives in
    ncnn_onnx.parity and nowhere else."""
    tol = bar(dtype if isinstance(dtype, torch.dtype) else np.dtype(dtype))
    err = parity_error(y, y_ref)
    assert err <= tol, f"parity error {err:.3e} > {tol:.0e} (dtype {dtype})"
    return err


def _numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().double().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def nc_reference(x, w, b=None, stride=1, pads=0, dilation=1, groups=1, eps=1e-5, center=True, scale=True):
    """Float64 NC by explicit patches. pads: int or ONNX-style (before..., after...)."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    w = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w).double()
    k = w.dim() - 2
    stride = _tuple(stride, k)
    dilation = _tuple(dilation, k)
    pads = _tuple(pads, 2 * k) if not isinstance(pads, int) else (pads,) * (2 * k)
    torch_pads = []
    for d in reversed(range(k)):
        torch_pads += [pads[d], pads[k + d]]
    xp = F.pad(x, torch_pads)
    kernel = w.shape[2:]
    for d in range(k):
        span = dilation[d] * (kernel[d] - 1) + 1
        xp = xp.unfold(2 + d, span, stride[d])  # appends a window dim
        xp = xp.narrow(-1, 0, span)[..., :: dilation[d]]
    # xp: (N, C, O1..Ok, k1..kk) -> (N, G, C/G * K, P)
    n, c = x.shape[:2]
    out = xp.shape[2 : 2 + k]
    perm = [0, 1] + [2 + k + d for d in range(k)] + [2 + d for d in range(k)]
    patches = xp.permute(perm).reshape(n, groups, (c // groups) * math.prod(kernel), -1)
    mu = patches.mean(2, keepdim=True)
    var = (patches - mu).square().mean(2, keepdim=True)
    v = patches - mu if center else patches
    if scale:
        v = v / torch.sqrt(var + eps)
    m = w.shape[0]
    y = torch.einsum("gmi,ngip->ngmp", w.reshape(groups, m // groups, -1), v).reshape(n, m, *out)
    if b is not None:
        b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).double()
        y = y + b.reshape(1, -1, *([1] * k))
    return y


def non_finite_input(shape, value, seed: int = 0) -> np.ndarray:
    """A float64 input (N >= 2, C >= 4) with `value` (an inf or NaN) at a few places: inside, at an edge
    (so padded patches see it) and, beside a `-value`, where some patches see both signs (inf - inf)."""
    x = np.random.default_rng(seed).standard_normal(shape) * 3 + 2
    spatial = shape[2:]
    x[(0, 1, *[s // 2 for s in spatial])] = value
    x[(1, 2, *[0] * len(spatial))] = value
    x[(1, 3, *[s - 1 for s in spatial])] = value
    x[(1, 3, *[s - 3 for s in spatial])] = -value
    return x


def non_finite_patches(x, w, stride=1, pads=0, dilation=1, groups=1) -> np.ndarray:
    """(N, M, O...) bools: the outputs whose patch (zero padding included) holds a NaN or an inf."""
    bad = torch.from_numpy(~np.isfinite(_numpy(x))).double()
    k = bad.dim() - 2
    pads = (pads,) * (2 * k) if isinstance(pads, int) else tuple(pads)
    bad = F.pad(bad, [p for d in reversed(range(k)) for p in (pads[d], pads[k + d])])
    conv = (F.conv1d, F.conv2d, F.conv3d)[k - 1]
    ones = torch.ones(tuple(np.shape(w)), dtype=torch.float64)
    return (conv(bad, ones, stride=stride, dilation=dilation, groups=groups) > 0).numpy()


def assert_non_finite_rule(y, x, w, b, dtype, stride=1, pads=0, dilation=1, groups=1, center=True, scale=True):
    """docs/op.md, "Non-finite values": with center or scale, NaN exactly at the outputs whose patch holds
    a NaN or inf, in every output channel; with neither, the convolution's IEEE results; everywhere,
    outputs of finite patches finite and within the parity bar of the reference (which follows the rule:
    non-finite outputs must equal its own, NaN for NaN and inf for inf of the same sign)."""
    geometry = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    x, w, b, y = _numpy(x), _numpy(w), None if b is None else _numpy(b), _numpy(y)
    seen = non_finite_patches(x, w, **geometry)
    assert seen.any() and not seen.all(), "the case must have both kinds of patch"
    assert np.isfinite(y[~seen]).all(), "a non-finite input reached an output whose patch does not hold it"
    if center or scale:
        assert np.array_equal(np.isnan(y), seen), "NaN must be exactly where a patch holds a NaN or an inf"
    ref = _numpy(nc_reference(x, w, b, center=center, scale=scale, **geometry))
    for what, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        wrong = test(y) != test(ref)
        assert not wrong.any(), f"{what} differs from the reference at {np.argwhere(wrong)[:4].tolist()}"
    finite = np.isfinite(ref)
    assert_parity(y[finite], ref[finite], dtype)


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


@functools.lru_cache(maxsize=None)
def _photo_sources():
    from skimage import data
    from sklearn.datasets import load_sample_images

    images = [data.astronaut(), data.coffee(), data.chelsea()]
    images += list(load_sample_images().images)
    return [np.ascontiguousarray(im[..., :3].transpose(2, 0, 1)).astype(np.float64) for im in images]


def photographs(size: int = 48, count: int = 6, seed: int = 0) -> np.ndarray:
    """(count, 3, size, size) crops of real photographs at raw 0-255 scale, float64.

    Half the crops are taken where the photo is flattest (sky, walls, saturated areas): the patches
    that make NC ill-conditioned.
    """
    rng = np.random.default_rng(seed)
    sources = _photo_sources()
    crops = []
    for i in range(count):
        im = sources[i % len(sources)]
        h, w = im.shape[1:]
        if i % 2:
            crops.append(_flattest_crop(im, size))
        else:
            top, left = rng.integers(0, h - size), rng.integers(0, w - size)
            crops.append(im[:, top : top + size, left : left + size])
    return np.stack(crops)


def _flattest_crop(im, size):
    best, best_std = None, math.inf
    h, w = im.shape[1:]
    for top in range(0, h - size, size // 2):
        for left in range(0, w - size, size // 2):
            crop = im[:, top : top + size, left : left + size]
            s = crop.std()
            if s < best_std:
                best, best_std = crop, s
    return best


def photo_scales(photos: np.ndarray) -> dict:
    """The three input scales the contract names: raw 0-255, [0, 1], standardized."""
    return {
        "raw": photos,
        "unit": photos / 255.0,
        "standardized": (photos - photos.mean()) / photos.std(),
    }

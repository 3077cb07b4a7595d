"""Model inputs from files (.npy, .npz, images) or at random, shaped from the model's signature."""

from __future__ import annotations

import os

import numpy as np

ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def signature(session) -> list[tuple[str, list, type]]:
    """[(name, shape with None for symbolic dims, numpy dtype)] of the session's inputs."""
    out = []
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else None for d in i.shape]
        out.append((i.name, shape, ORT_TO_NUMPY.get(i.type, np.float32)))
    return out


def random_feed(sig, shape=None, seed: int = 0) -> dict:
    """Standard-normal inputs; symbolic dims are 1 (batch) or 32 (others) unless `shape` is given."""
    from . import CliError

    rng = np.random.default_rng(seed)
    feed = {}
    for name, dims, dtype in sig:
        if shape is not None and len(sig) == 1:
            if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
                raise CliError(f"input shape {tuple(shape)} does not fit input {name!r} of shape {dims}")
            concrete = list(shape)
        else:
            concrete = [d if d is not None else (1 if i == 0 else 32) for i, d in enumerate(dims)]
        feed[name] = rng.standard_normal(concrete).astype(dtype)
    return feed


def load(path: str, sig) -> dict:
    """A feed from one file: .npy (the single input), .npz (inputs by name, or arr_0.. in order),
    or an image (scaled to [0, 1], resized to the model's height and width when they are fixed)."""
    from . import CliError

    if not os.path.exists(path):
        raise CliError(f"input file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        with np.load(path) as archive:
            names = [name for name, _, _ in sig]
            if all(n in archive for n in names):
                arrays = [archive[n] for n in names]
            elif len(archive.files) == len(names):
                arrays = [archive[k] for k in archive.files]
            else:
                raise CliError(f"{path} holds {archive.files}; the model takes {names}")
    elif suffix == ".npy":
        if len(sig) != 1:
            raise CliError(f"the model takes {len(sig)} inputs; give them in one .npz file")
        arrays = [np.load(path)]
    elif suffix in IMAGE_SUFFIXES:
        if len(sig) != 1:
            raise CliError("images can feed single-input models only")
        arrays = [_image(path, sig[0][1])]
    else:
        raise CliError(f"unsupported input file {path!r}: use .npy, .npz or an image")
    feed = {}
    for (name, dims, dtype), array in zip(sig, arrays):
        if array.ndim == len(dims) - 1:
            array = array[None]  # a single sample: add the batch dim
        if array.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, array.shape)):
            raise CliError(f"{path}: input {name!r} has shape {array.shape}, the model expects {dims}")
        feed[name] = array.astype(dtype, copy=False)
    return feed


def _image(path: str, dims) -> np.ndarray:
    from .._extras import require
    from . import CliError

    Image = require("PIL.Image", f"reading the image {os.path.basename(path)}", "images")  # noqa: N806

    if len(dims) != 4:
        raise CliError(f"images need a 4-D (N, C, H, W) model input, the model's is {dims}")
    channels = dims[1] or 3
    if channels not in (1, 3):
        raise CliError(f"images give 1 or 3 channels, the model expects {channels}")
    image = Image.open(path).convert("L" if channels == 1 else "RGB")
    if dims[2] is not None and dims[3] is not None:
        image = image.resize((dims[3], dims[2]))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)

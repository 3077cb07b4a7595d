"""ncnn-onnx check model.onnx [--reference SPEC [--weights w.pt] [--inputs FILES] [--input-shape S]]

First diagnoses the file, one line each: its NormalizedConv nodes and op version, whether the fallback
function is there and matches the ONNX opset the model imports (or was dropped, edited or inlined by a
tool), and the command that fixes it. With --reference it then runs the eager model (and a float64 copy
of it as the reference) and every deployed path that is available here on random and given inputs, and
prints max abs / relative error per output and path. Exits 1 when the diagnosis finds a problem or a path
is over the parity bar of ncnn_onnx.parity.

Where eager float32 itself misses the bar on an input (the network is ill-conditioned in float32 there),
each deployed path is judged against that spread instead ('spread' in the table, ncnn_onnx.conditioning),
and the layer where the float32 error grows most is named."""

from __future__ import annotations

import copy
import os

import numpy as np


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--reference", metavar="SPEC",
                   help="package.module:factory of the eager model: also check parity on every deployed path")
    p.add_argument("--weights", help="a state_dict saved with torch.save")
    p.add_argument("--inputs", nargs="*", default=[], help=".npy/.npz/image files to check as well")
    p.add_argument("--input-shape", help="shape of the random input (default: from the model, 1 for dynamic batch)")
    p.add_argument("--random", type=int, default=2, help="number of random inputs (default 2)")
    p.add_argument("--threads", type=int, default=None)


def load_diagnosis(path: str):
    """`ncnn_onnx.export.repair.diagnose` of the file, unreadable files as one-line errors."""
    from ncnn_onnx.export.repair import diagnose

    from . import read_model

    return diagnose(read_model(path))


def diagnosed_input(args):
    """The diagnosis of a tool command's input (refused where its op version is not ours), with the
    output's folder made."""
    from . import CliError

    before = load_diagnosis(args.model)
    if not before.op_version_supported:
        raise CliError(before.nodes_text())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    return before


def print_diagnosis(diagnosis, path: str) -> None:
    for label, text in diagnosis.lines(path):
        print(f"{label}: {text}")


def run(args) -> int:
    diagnosis = load_diagnosis(args.model)
    print_diagnosis(diagnosis, args.model)
    if args.reference is None:
        return 1 if diagnosis.problems else 0
    if not diagnosis.op_version_supported:
        print("parity: not checked (no runtime here implements the op version the model imports)")
        return 1
    failed = _parity(args)
    return 1 if failed or diagnosis.problems else 0


def _parity(args) -> bool:
    from .._extras import require

    torch = require("torch", "ncnn-onnx check")
    from tqdm import tqdm

    from ncnn_onnx.parity import bar, parity_error

    from . import CliError, deployed, inputs
    from .model_spec import load_model, parse_shape

    sessions, missing = deployed.open_all(args.model, args.threads)
    sig = inputs.signature(next(iter(sessions.values())))
    eager = load_model(args.reference, args.weights, "ncnn-onnx check")
    # Eager runs in the exported precision (an --fp16 model takes float16); the float64 reference starts
    # from the same rounded weights, so only the arithmetic is measured.
    dtype = torch.from_numpy(np.zeros(0, sig[0][2])).dtype
    if dtype.is_floating_point:
        eager = eager.to(dtype)
    reference = copy.deepcopy(eager).double()
    shape = parse_shape(args.input_shape) if args.input_shape else None
    feeds = [(f"random #{i + 1}", inputs.random_feed(sig, shape, seed=i)) for i in range(args.random)]
    feeds += [(os.path.basename(path), inputs.load(path, sig)) for path in args.inputs]
    if not feeds:
        raise CliError("nothing to check: give --inputs or a --random count above 0")
    out_names = [o.name for o in next(iter(sessions.values())).get_outputs()]

    rows, failed, ill = [], False, []  # ill: (eager error, bar, feed name, tensors) where eager misses the bar
    for feed_name, feed in tqdm(feeds, desc="check", unit="input", leave=False, disable=None):
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in feed.values()]
        with torch.no_grad():
            ref = _as_list(reference(*[t.double() for t in tensors]))
            results = {"eager PyTorch": [o.numpy() for o in _as_list(eager(*tensors))]}
        results.update({label: s.run(None, feed) for label, s in sessions.items()})
        if len(ref) != len(out_names):
            raise CliError(f"{args.reference} gives {len(ref)} output(s), the model {len(out_names)}: "
                           "not its reference")
        for label, outs in results.items():
            for name, y, y_ref in zip(out_names, outs, ref):
                y_ref = y_ref.numpy()
                if np.shape(y) != y_ref.shape:
                    raise CliError(f"output {name!r} has shape {np.shape(y)} on {label}, {y_ref.shape} in "
                                   f"{args.reference}: not its reference")
                err = parity_error(y, y_ref)
                limit = bar(np.asarray(y).dtype)
                eager_err = parity_error(results["eager PyTorch"][out_names.index(name)], y_ref)
                verdict = _verdict(err, eager_err, limit)
                failed |= verdict == "NO"
                if label == "eager PyTorch" and verdict == "spread":
                    ill.append((eager_err, limit, feed_name, tensors))
                abs_err = float(np.max(np.abs(np.asarray(y, np.float64) - y_ref))) if y_ref.size else 0.0
                rows.append((feed_name, label, name, abs_err, err, limit, verdict))

    # Columns as wide as their longest entry: cut names would make two inputs or outputs look alike.
    w_in = max(len("input"), *(len(r[0]) for r in rows)) + 2
    w_path = max(len("path"), *(len(r[1]) for r in rows)) + 2
    w_out = max(len("output"), *(len(r[2]) for r in rows)) + 2
    print(f"{'input':<{w_in}}{'path':<{w_path}}{'output':<{w_out}}{'max abs err':>11}{'rel err':>11}{'bar':>9}  ok")
    for feed_name, label, name, abs_err, err, limit, verdict in rows:
        print(f"{feed_name:<{w_in}}{label:<{w_path}}{name:<{w_out}}{abs_err:>11.3e}{err:>11.3e}{limit:>9.0e}  {verdict}")
    for label, why in missing.items():
        print(f"not checked: {label}: {why}")
    if ill:
        _print_conditioning(max(ill, key=lambda item: item[0]), eager, reference)
    if failed:
        print("parity: FAILED (over the bar)")
    elif ill:
        print("parity: every path within the bar, or within the network's own float32 spread where the input "
              "is ill-conditioned (see above)")
    else:
        print("parity: all paths within the bar")
    return failed


def _verdict(err: float, eager_err: float, limit: float) -> str:
    """'yes' within the bar; 'spread' over it, where eager itself is over it too (the network is
    ill-conditioned on this input) and the path is as close as the network's own float32 arithmetic
    allows (ncnn_onnx.conditioning.within_spread); else 'NO'."""
    from ncnn_onnx.conditioning import within_spread

    if err <= limit:
        return "yes"
    if eager_err > limit and within_spread(err, eager_err, limit):
        return "spread"
    return "NO"


def _print_conditioning(worst_input, eager, reference) -> None:
    """Says why eager misses the bar on an input, naming the layer where the float32 error grows most."""
    from ncnn_onnx.conditioning import SPREAD_FACTOR, layer_conditions, worst_layer

    eager_err, limit, feed_name, tensors = worst_input
    print(f"ill-conditioned: eager PyTorch itself is {eager_err:.1e} from float64 on {feed_name} (bar {limit:.0e}): "
          f"the network is ill-conditioned in its own precision there, not a deployment error. Paths marked "
          f"'spread' are within {SPREAD_FACTOR:g}x of that error.")
    worst = worst_layer(layer_conditions(eager, reference, tensors))
    if worst is not None:
        print(f"worst-conditioned layer: {worst.text()}")
    print("see the README, \"Parity contract\"")


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]

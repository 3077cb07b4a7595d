"""ncnn-onnx check model.onnx --reference SPEC [--weights w.pt] [--inputs FILES] [--input-shape S]

Runs the eager model (and a float64 copy of it as the reference) and every deployed path that is
available here on random and given inputs; prints max abs / relative error per output and path and
exits 1 when any path is over the parity bar of ncnn_onnx.parity."""

from __future__ import annotations

import copy

import numpy as np


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--reference", required=True, metavar="SPEC", help="package.module:factory of the eager model")
    p.add_argument("--weights", help="a state_dict saved with torch.save")
    p.add_argument("--inputs", nargs="*", default=[], help=".npy/.npz/image files to check as well")
    p.add_argument("--input-shape", help="shape of the random input (default: from the model, 1 for dynamic batch)")
    p.add_argument("--random", type=int, default=2, help="number of random inputs (default 2)")
    p.add_argument("--threads", type=int, default=None)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from ncnn_onnx.parity import bar, parity_error

    from . import deployed, inputs
    from .model_spec import load_model, parse_shape

    eager = load_model(args.reference, args.weights)
    reference = copy.deepcopy(eager).double()
    paths, missing = deployed.available(args.model)
    if not paths:
        from . import CliError

        raise CliError("no deployed path can run this model here: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    sessions = {label: make(threads=args.threads) for label, make in paths.items()}
    sig = inputs.signature(next(iter(sessions.values())))
    shape = parse_shape(args.input_shape) if args.input_shape else None
    feeds = [(f"random #{i + 1}", inputs.random_feed(sig, shape, seed=i)) for i in range(args.random)]
    feeds += [(path, inputs.load(path, sig)) for path in args.inputs]
    out_names = [o.name for o in next(iter(sessions.values())).get_outputs()]

    rows, failed = [], False
    for feed_name, feed in tqdm(feeds, desc="check", unit="input", leave=False):
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in feed.values()]
        with torch.no_grad():
            ref = _as_list(reference(*[t.double() for t in tensors]))
            results = {"eager PyTorch": [o.numpy() for o in _as_list(eager(*tensors))]}
        results.update({label: s.run(None, feed) for label, s in sessions.items()})
        for label, outs in results.items():
            for name, y, y_ref in zip(out_names, outs, ref):
                y_ref = y_ref.numpy()
                err = parity_error(y, y_ref)
                limit = bar(np.asarray(y).dtype)
                ok = err <= limit
                failed |= not ok
                abs_err = float(np.max(np.abs(np.asarray(y, np.float64) - y_ref))) if y_ref.size else 0.0
                rows.append((feed_name, label, name, abs_err, err, limit, ok))

    print(f"{'input':<14}{'path':<24}{'output':<12}{'max abs err':>13}{'rel err':>11}{'bar':>9}  ok")
    for feed_name, label, name, abs_err, err, limit, ok in rows:
        print(f"{feed_name[:13]:<14}{label:<24}{name[:11]:<12}{abs_err:>13.3e}{err:>11.3e}{limit:>9.0e}  "
              f"{'yes' if ok else 'NO'}")
    for label, why in missing.items():
        print(f"not checked: {label}: {why}")
    print("parity: " + ("FAILED (over the bar)" if failed else "all paths within the bar"))
    return 1 if failed else 0


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]

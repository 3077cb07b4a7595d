"""ncnn-onnx bench model.onnx [--input-shape S] [--threads T] [--repeats R] [--json]: latency per deployed path."""

from __future__ import annotations

import json
import statistics
import time


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--input-shape", help="input shape (default: from the model, 1 and 32 for dynamic dims)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object with the unrounded figures instead of the table")


def run(args) -> int:
    from tqdm import tqdm

    from . import deployed, inputs
    from .model_spec import parse_shape

    shape = parse_shape(args.input_shape) if args.input_shape else None
    sessions, missing = deployed.open_all(args.model, args.threads)
    feed = inputs.random_feed(inputs.signature(next(iter(sessions.values()))), shape)
    input_shape = tuple(next(iter(feed.values())).shape)
    batch = input_shape[0]
    times = {label: [] for label in sessions}
    for label, sess in sessions.items():
        for _ in range(args.warmup):
            sess.run(None, feed)
    # Interleaved, so that a noisy machine slows every path alike.
    for _ in tqdm(range(args.repeats), desc="bench", unit="round", leave=False, disable=None):
        for label, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, feed)
            times[label].append(time.perf_counter() - start)
    base = statistics.median(times[next(iter(times))])
    rows = {}
    for label, samples in times.items():
        med = statistics.median(samples)
        rows[label] = {"latency_ms": med * 1e3, "samples_per_s": batch / med, "vs_first": med / base}
    if args.json:
        report = {"input_shape": list(input_shape), "batch": batch, "rounds": args.repeats, "statistic": "median",
                  "paths": rows, "not_measured": dict(missing)}
        print(json.dumps(report, indent=2))
        return 0
    print(f"input {input_shape}, {args.repeats} interleaved rounds, median")
    print(f"{'path':<24}{'latency ms':>12}{'samples/s':>12}{'vs first':>10}")
    for label, row in rows.items():
        print(f"{label:<24}{row['latency_ms']:>12.3f}{row['samples_per_s']:>12.1f}{row['vs_first']:>10.2f}")
    for label, why in missing.items():
        print(f"not measured: {label}: {why}")
    return 0

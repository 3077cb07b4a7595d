"""Real architectures, served and trained: NC models against the models NC would replace, side by side.

For each model (benchmarks/model_zoo.py: torchvision and timm, random seeded weights):

- serving, onnxruntime CPU, batch 1 and 8 at 224x224: the NC model (convert_model(norms="following"),
  exported with ncnn_onnx.export) with the library and with its fallback function in plain onnxruntime,
  against its plain-Conv twin (the original model exported with torch.onnx; onnxruntime folds its
  BatchNorm). Every session runs once per round, in a rotating order; times are medians over the rounds.
- training, PyTorch CPU, forward+backward at batch 2: the NC model against the same model with GroupNorm
  in place of BatchNorm (what NC competes with at micro-batch sizes), time (interleaved rounds) and peak
  memory (each in a fresh process whose glibc maps every tensor-sized allocation, as benchmarks/layer.py).
- with --breakdown, where the time goes: onnxruntime's profiler per convolution kind (dense kxk,
  depthwise, grouped, pointwise 1x1, stride 2) for the NC node and the twin's Conv, and torch.profiler's
  heaviest operators of one NC training step.

Targets (issue 11): serving NC/twin <= 1.5x (ResNet-style <= 1.3x), fallback/twin <= 3x, training
NC/GroupNorm <= 2x (resnet18 and densenet121 <= 1.5x).

    python benchmarks/models.py [--models resnet18,mobilenet_v3_small] [--threads 2] [--rounds 5]
                                [--size 224] [--no-train | --no-serve] [--breakdown]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_zoo  # noqa: E402

from ncnn_onnx import runtime  # noqa: E402
from ncnn_onnx.export import export  # noqa: E402

SERVING_TARGET, RESNET_TARGET, FALLBACK_TARGET = 1.5, 1.3, 3.0
TRAINING_TARGET, RESNET_TRAINING_TARGET = 2.0, 1.5
RESNET_STYLE = ("resnet18", "densenet121", "timm_resnet18")


def export_pair(name: str, size: int, folder: str) -> tuple[str, str]:
    """(NC model path, twin path) for model `name` with a dynamic batch."""
    original = model_zoo.build(name)
    nc = model_zoo.nc_version(original)
    x = torch.randn(1, 3, size, size)
    nc_path, twin_path = os.path.join(folder, f"{name}.nc.onnx"), os.path.join(folder, f"{name}.twin.onnx")
    export(nc, (x,), nc_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: torch.export could not give convnext_tiny a dynamic batch ("Invalid
        # ranges"), and the twin has no NC layer (which only ncnn_onnx.export writes).
        torch.onnx.export(original, (x,), twin_path, dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return nc_path, twin_path


def options(threads: int, profile: str | None = None, basic: bool = False) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Interleaved sessions must not leave a spinning pool behind to compete with the next (ort_cpu.py).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if basic:  # no NCHWc layout transform: the profile's Conv nodes keep their own weight shapes
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return opts


def serving(nc_path, twin_path, threads, batches, size, rounds) -> dict:
    cpu = ["CPUExecutionProvider"]
    sessions = {
        # The session helper, as users serve: it fuses each NC node with the activation after it.
        "NC": runtime.InferenceSession(nc_path, cpu, runtime.session_options(options(threads))),
        "fallback": ort.InferenceSession(nc_path, options(threads), providers=cpu),
        "twin": ort.InferenceSession(twin_path, options(threads), providers=cpu),
    }
    result = {}
    for n in batches:
        x = np.random.default_rng(n).standard_normal((n, 3, size, size)).astype(np.float32)
        feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
        outputs = {k: s.run(None, feeds[k])[0] for k, s in sessions.items()}  # warm
        times = {k: [] for k in sessions}
        keys = list(sessions)
        for r in range(rounds):
            for key in keys[r % 3:] + keys[:r % 3]:
                start = time.perf_counter()
                sessions[key].run(None, feeds[key])
                times[key].append(time.perf_counter() - start)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        agreement = float(np.abs(outputs["NC"] - outputs["fallback"]).max() / np.abs(outputs["NC"]).max())
        result[n] = {"ms": ms, "nc_vs_fallback": agreement}
    return result


def training_models(name: str):
    original = model_zoo.build(name)
    return model_zoo.nc_version(original).train(), model_zoo.group_norm_twin(original).train()


def train_step(model, x, grad):
    model(x).backward(grad)
    for p in model.parameters():
        p.grad = None


def training_time(name, size, rounds, batch=2) -> dict:
    nc, gn = training_models(name)
    x = torch.randn(batch, 3, size, size)
    grad = torch.randn(batch, 1000, generator=torch.Generator().manual_seed(0))
    models = {"NC": nc, "GroupNorm": gn}
    for m in models.values():
        train_step(m, x, grad)  # warm
    times = {k: [] for k in models}
    keys = list(models)
    for r in range(rounds):
        for key in keys[r % 2:] + keys[:r % 2]:
            start = time.perf_counter()
            train_step(models[key], x, grad)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def measure_training_memory(name, size, batch=2) -> dict:
    """Peak resident growth of one training step per model (run in a child: see training_memory)."""
    import layer

    nc, gn = training_models(name)
    x = torch.randn(batch, 3, size, size)
    grad = torch.randn(batch, 1000, generator=torch.Generator().manual_seed(0))
    result = {}
    for key, model in (("NC", nc), ("GroupNorm", gn)):
        train_step(model, x, grad)
        result[key] = layer.peak_memory(lambda: train_step(model, x, grad))
    return result


def training_memory(name, size, threads) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import torch; torch.set_num_threads({threads}); import models; "
            f"print(json.dumps(models.measure_training_memory({name!r}, {size})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_kinds(path: str, library: bool, threads: int, size: int, folder: str) -> dict:
    """Milliseconds per convolution kind (and "other") in one profiled batch-1 run."""
    prefix = os.path.join(folder, "profile")
    opts = options(threads, profile=prefix, basic=True)
    if library:
        opts = runtime.session_options(opts)
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(3):
        session.run(None, {session.get_inputs()[0].name: x})
    trace = session.end_profiling()
    kinds = collections.Counter()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        op = args.get("op_name", "")
        shapes = [next(iter(s.values())) for s in args.get("input_type_shape", [])]
        kind = "other"
        if op in ("Conv", "FusedConv", "NormalizedConv") and len(shapes) >= 2 and len(shapes[1]) == 4:
            x_shape, w_shape = shapes[0], shapes[1]
            groups = x_shape[1] // max(w_shape[1], 1)
            out_shape = [next(iter(s.values())) for s in args.get("output_type_shape", [])]
            stride = [1, 1]
            if out_shape and len(out_shape[0]) == 4:
                stride = [max(1, round(x_shape[2] / max(out_shape[0][2], 1)))] * 2
            kind = model_zoo.conv_kind(w_shape, groups, stride)
        kinds[kind] += event.get("dur", 0) / 1e3 / 3  # three runs
    return dict(kinds)


def torch_top_ops(name: str, size: int, count: int = 8) -> list[tuple[str, float]]:
    nc, _ = training_models(name)
    x = torch.randn(2, 3, size, size)
    grad = torch.randn(2, 1000)
    train_step(nc, x, grad)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_step(nc, x, grad)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [(e.key, e.self_cpu_time_total / 1e3) for e in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(model_zoo.MODELS), help="comma-separated, from model_zoo.MODELS")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-serve", action="store_true", help="training only: no export, no onnxruntime sessions")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(model_zoo.MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {sorted(model_zoo.MODELS)}")
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.threads} threads, {args.size}x{args.size}, "
          f"median of {args.rounds} interleaved rounds")
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            if not args.no_serve or args.breakdown:
                nc_path, twin_path = export_pair(name, args.size, folder)
            serve = {} if args.no_serve else serving(nc_path, twin_path, args.threads, batches, args.size, args.rounds)
            row = {"model": name, "serve": serve}
            if not args.no_train:
                row["train_ms"] = training_time(name, args.size, args.rounds)
                row["train_bytes"] = training_memory(name, args.size, args.threads)
            if args.breakdown:
                row["nc_kinds"] = profile_kinds(nc_path, True, args.threads, args.size, folder)
                row["twin_kinds"] = profile_kinds(twin_path, False, args.threads, args.size, folder)
                row["torch_ops"] = torch_top_ops(name, args.size)
            rows.append(row)
            report(row, batches)
    print(f"\n{time.perf_counter() - started:.0f} s")
    summary(rows, batches)
    return 0


def report(row, batches) -> None:
    name = row["model"]
    parts = []
    for n in row["serve"]:
        ms = row["serve"][n]["ms"]
        parts.append(f"b{n}: NC {ms['NC']:.1f} ms fallback {ms['fallback']:.1f} twin {ms['twin']:.1f} -> "
                     f"NC/twin {ms['NC'] / ms['twin']:.2f} fb/twin {ms['fallback'] / ms['twin']:.2f} "
                     f"(NC vs fallback {row['serve'][n]['nc_vs_fallback']:.1e})")
    print(f"\n{name}: " + "; ".join(parts), flush=True)
    if "train_ms" in row:
        t, mem = row["train_ms"], row["train_bytes"]
        print(f"  training b2: NC {t['NC']:.0f} ms GroupNorm {t['GroupNorm']:.0f} ms -> {t['NC'] / t['GroupNorm']:.2f}x; "
              f"peak NC {mem['NC'] / 2**20:.0f} MiB GroupNorm {mem['GroupNorm'] / 2**20:.0f} MiB -> "
              f"{mem['NC'] / max(mem['GroupNorm'], 1):.2f}x", flush=True)
    if "nc_kinds" in row:
        kinds = sorted(set(row["nc_kinds"]) | set(row["twin_kinds"]))
        print("  onnxruntime profile, batch 1, ms per kind (NC node / twin Conv): " + ", ".join(
            f"{k} {row['nc_kinds'].get(k, 0):.2f}/{row['twin_kinds'].get(k, 0):.2f}" for k in kinds))
        print("  torch.profiler, NC training step, heaviest ops (self ms): " + ", ".join(
            f"{k} {v:.1f}" for k, v in row["torch_ops"]))


def summary(rows, batches) -> None:
    header = "| model | " + " | ".join(f"NC/twin b{n}" for n in batches) + " | " + " | ".join(
        f"fallback/twin b{n}" for n in batches) + " | training NC/GN time | training NC/GN memory |"
    print("\n" + header)
    print("|" + " --- |" * (header.count("|") - 1))
    missed = []
    for row in rows:
        name = row["model"]
        served = [n for n in batches if n in row["serve"]]
        nc = [row["serve"][n]["ms"]["NC"] / row["serve"][n]["ms"]["twin"] for n in served]
        fb = [row["serve"][n]["ms"]["fallback"] / row["serve"][n]["ms"]["twin"] for n in served]
        target = RESNET_TARGET if name in RESNET_STYLE else SERVING_TARGET
        missed += [f"{name} serving b{n} {r:.2f}x > {target}x" for n, r in zip(served, nc) if r > target]
        missed += [f"{name} fallback b{n} {r:.2f}x > {FALLBACK_TARGET}x" for n, r in zip(served, fb) if r > FALLBACK_TARGET]
        train = mem = ""
        if "train_ms" in row:
            ratio = row["train_ms"]["NC"] / row["train_ms"]["GroupNorm"]
            train = f"{ratio:.2f}"
            mem = f"{row['train_bytes']['NC'] / max(row['train_bytes']['GroupNorm'], 1):.2f}"
            limit = RESNET_TRAINING_TARGET if name in ("resnet18", "densenet121") else TRAINING_TARGET
            if ratio > limit:
                missed.append(f"{name} training {ratio:.2f}x > {limit}x")
        cells = [f"{r:.2f}" for r in nc] + [f"{r:.2f}" for r in fb] if served else ["-"] * (2 * len(batches))
        print(f"| {name} | " + " | ".join(cells) + f" | {train} | {mem} |")
    print("\ntargets: " + ("all met" if not missed else "missed: " + "; ".join(missed)))


if __name__ == "__main__":
    raise SystemExit(main())

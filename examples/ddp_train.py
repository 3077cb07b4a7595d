"""Distributed data-parallel training of an NC network over gloo on CPU.

NC normalizes each patch by itself, so unlike BatchNorm it needs no SyncBatchNorm and no
cross-process statistics: DDP only all-reduces gradients, and every rank ends with identical weights.

    torchrun --standalone --nproc-per-node 2 examples/ddp_train.py [--epochs 1] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from common import SmallResNet, digits, evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2, help="per process")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--train-size", type=int, default=None)
    args = parser.parse_args(argv)

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    x_train, y_train, x_val, y_val = digits()
    if args.train_size:
        x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    shard = slice(rank, None, world)  # each rank trains on its own interleaved shard
    x_local, y_local = x_train[shard], y_train[shard]

    torch.manual_seed(0)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(SmallResNet(norm="nc"))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(rank)
    steps = len(x_local) // args.batch_size  # equal step counts keep the all-reduces in lockstep
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_local), generator=gen)
        for step in range(steps):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_local[idx]), y_local[idx]).backward()
            opt.step()
        loss, acc = evaluate(model.module, x_val, y_val)
        if rank == 0:
            print(f"epoch {epoch + 1}: validation loss {loss:.4f}, accuracy {acc:.3f} ({world} processes)")

    # Every rank must hold the same weights: check it instead of trusting it.
    flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    spread = max((g - flat).abs().max().item() for g in gathered)
    if rank == 0:
        print(f"max weight difference between ranks: {spread:.3e}")
    # Without this barrier one rank may tear gloo down while the other still talks to it, and the
    # process aborts at exit ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()
    if spread != 0.0:
        raise SystemExit(f"ranks diverged: max weight difference {spread}")


if __name__ == "__main__":
    main()

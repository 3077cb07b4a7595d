"""Distributed data-parallel training of an NC network over gloo on CPU.

NC normalizes each patch by itself, so unlike BatchNorm it needs no SyncBatchNorm and no
cross-process statistics: DDP only all-reduces gradients, and every rank ends with identical weights.

    torchrun --standalone --nproc-per-node 2 examples/ddp_train.py [--epochs 1] [--batch-size 2]

Shards may be uneven (a training set that the world size does not divide, a last partial batch): the
loop runs under `torch.distributed.algorithms.join.Join`, so a rank that runs out of batches shadows
the others' all-reduces instead of leaving them waiting forever.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os

import torch
import torch.distributed as dist
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel

from common import SmallResNet, digits, evaluate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=2, help="per process")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds a collective may wait for the other ranks before it fails")
    args = parser.parse_args(argv)

    # A rank that dies or desynchronizes makes the others fail after --timeout instead of hanging.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.timeout))
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
    # Every sample is used, the last partial batch too, so ranks may take different numbers of steps
    # (with the default 1347 digits: 674 and 673 samples). Join handles that; we chose it over
    # DistributedSampler(drop_last=True), which evens the shards by dropping up to world-1 samples
    # (drop_last=False repeats some instead). Under Join, a rank that is done shadows the others'
    # all-reduces with zero gradients (DDP still divides by the full world size), and on leaving Join
    # DDP gives every rank the weights of the last rank to finish. Join wraps all epochs, not each:
    # while every rank is training, all hold the same weights and optimizer state.
    steps = -(-len(x_local) // args.batch_size)
    print(f"rank {rank}: {len(x_local)} samples, {steps} steps per epoch", flush=True)
    with Join([model]):
        for epoch in range(args.epochs):
            model.train()
            order = torch.randperm(len(x_local), generator=gen)
            for step in range(steps):
                idx = order[step * args.batch_size : (step + 1) * args.batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x_local[idx]), y_local[idx]).backward()
                opt.step()
            loss, acc = evaluate(model.module, x_val, y_val)  # local: no collective inside Join
            if rank == 0:
                print(f"epoch {epoch + 1}: validation loss {loss:.4f}, accuracy {acc:.3f} ({world} processes)")

    # Every rank must hold the same weights: check it instead of trusting it.
    flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    spread = max((g - flat).abs().max().item() for g in gathered)
    if rank == 0:
        print(f"max weight difference between ranks: {spread:.3e}")
    # gloo aborted the process at exit ("terminate called without an active exception") about one run in
    # five: the DDP wrapper's reducer keeps the process group alive past destroy_process_group, so gloo was
    # torn down later, during interpreter shutdown. Drop the wrapper first, then tear down together.
    del model, opt
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    if spread != 0.0:
        raise SystemExit(f"ranks diverged: max weight difference {spread}")


if __name__ == "__main__":
    main()

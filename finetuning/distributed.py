"""Several processes under torchrun: each process's place in the run, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    """This process's place in the run: rank, number of processes, and its device."""

    rank: int
    world: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Process:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    world = environment_count("WORLD_SIZE", 1, least=1)
    if world == 1:
        return Process(0, 1, device)
    local_rank = environment_count("LOCAL_RANK", 0, least=0)
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
    return Process(dist.get_rank(), world, f"cuda:{local_rank}" if cuda else "cpu")


def environment_count(name: str, unset: int, *, least: int) -> int:
    """A whole number torchrun puts in the environment variable `name` (`unset` when it is not set); anything else
    is a ValueError naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return unset
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise ValueError(
            f"{name}={text!r} is not a whole number >= {least}: torchrun sets it; unset it to train in one process"
        )
    return value


def all_mean(values: list[float], process: Process) -> list[float]:
    """The mean over processes of each value (the values themselves in a single process). The values
    travel on the process's device: NCCL reduces only CUDA tensors."""
    if process.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=process.device)
    dist.all_reduce(t)
    return (t / process.world).tolist()


def barrier(process: Process) -> None:
    if process.world > 1:
        dist.barrier()

"""Data-parallel runs under torchrun: `torchrun --nproc-per-node N --no-python -- unmask eval ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; one process per rank decodes the samples whose
index is congruent to its rank, and rank 0 gathers every record, puts them back in sample order
and writes the outputs once. Backend: gloo on CPU, nccl on CUDA (one device per rank). A rank
that fails exits non-zero with its rank in the message, and torchrun ends the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Group:
    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list[tuple[int, Any]]:
        """(index, item) of the items this rank decodes: index % size == rank."""
        return [(i, x) for i, x in enumerate(items) if i % self.size == self.rank]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0 (in rank order); None on the others."""
        out = [None] * self.size if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def done(self, k: int = 1, key: str = "") -> int:
        """Count k more finished samples across ranks (one count per `key`, e.g. a recipe);
        returns the run's total so far."""
        return dist.distributed_c10d._get_default_store().add(f"unmask/done/{key}", k)

    def close(self) -> None:
        """Every rank calls it at the same point: a barrier, then the group is torn down (a
        rank that tore its group down while the others still used theirs once died at exit
        with "terminate called without an active exception")."""
        dist.barrier()
        dist.destroy_process_group()


def launched() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun started this process with more than one
    rank, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: str) -> str:
    """One GPU per rank: a plain `cuda` becomes `cuda:LOCAL_RANK` under torchrun. `device` is
    already checked and resolved (cli._device); this only maps the rank onto it."""
    world = launched()
    if world is None or device != "cuda":
        return device
    count = torch.cuda.device_count()
    if world[2] >= count:
        raise ValueError(f"local rank {world[2]} needs GPU {world[2]}; this machine has {count}")
    return f"cuda:{world[2]}"


def setup(device: str) -> Group | None:
    """The process group when launched by torchrun with more than one rank, else None: gloo on
    CPU, nccl on CUDA. `device` is this rank's own, from `rank_device`."""
    world = launched()
    if world is None:
        return None
    rank, size, local = world
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if cuda else "gloo", rank=rank, world_size=size, timeout=timedelta(minutes=60)
    )
    return Group(rank, size, local)

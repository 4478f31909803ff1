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


def setup(device: str | None) -> Group | None:
    """The process group when launched by torchrun with more than one rank, else None. Picks
    gloo on CPU and nccl on CUDA, with this rank's own GPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if cuda:
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"--device {device}: this machine has no CUDA GPU (use --device cpu)")
        if local >= count:
            raise ValueError(f"local rank {local} needs GPU {local}; this machine has {count}")
        torch.cuda.set_device(local)
    dist.init_process_group(
        "nccl" if cuda else "gloo", rank=rank, world_size=size, timeout=timedelta(minutes=60)
    )
    return Group(rank, size, local)


def rank_device(group: Group | None, device: str | None) -> str | None:
    """One device per rank: cuda becomes cuda:LOCAL_RANK under torchrun."""
    if group is None or device not in (None, "cuda"):
        return device
    if device is None and not torch.cuda.is_available():
        return None
    return f"cuda:{group.local_rank}"

"""Data-parallel runs: `torchrun --nproc-per-node N --no-python -- unmask eval ...`, or on one
machine `unmask eval --ranks N ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `--ranks N` sets the same by forking the process
N-1 times (fork_ranks). One process per rank decodes the samples whose index is congruent to its
rank, and rank 0 gathers every record, puts them back in sample order and writes the outputs
once. Backend: gloo on CPU, nccl on CUDA (one device per rank). A rank that fails exits non-zero
with its rank in the message, and the launcher (torchrun, or rank 0 under --ranks) ends the
others.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import time
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
        _ending.set()  # past this point a rank that exits has done its share
        dist.destroy_process_group()


def setup(device: str | None, ranks: int = 1) -> Group | None:
    """The process group when launched by torchrun with more than one rank, or with `ranks` > 1
    (fork_ranks), else None. Picks gloo on CPU and nccl on CUDA, with this rank's own GPU."""
    if ranks > 1:
        fork_ranks(ranks)
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


# --ranks: the ranks of one machine, forked from one process.
_children: list[int] = []  # rank 0's: the pid of rank r at index r - 1
_ending = threading.Event()


def fork_ranks(n: int) -> None:
    """Turn this process into rank 0 of `n` on this machine: fork n-1 copies that carry on from
    the call as ranks 1..n-1, with the environment torchrun would give them (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT on a free loopback port). Against torchrun it saves two
    interpreter starts on the critical path: torchrun's launcher imports torch before any rank
    starts, then every rank imports it again, where a fork inherits the parent's import.

    Call it before anything touches CUDA (a forked child cannot re-initialize it); each rank
    then picks its own device. Without OMP_NUM_THREADS each rank gets cores // n threads.
    Failures end the run as under torchrun: rank 0 watches the others and, when one exits
    non-zero before the run's last barrier, stops the rest and exits 1 (the failed rank has
    printed its own error); the others exit when rank 0 is gone."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--ranks under torchrun: let torchrun start the ranks, or drop torchrun")
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(n),
        LOCAL_WORLD_SIZE=str(n),
    )
    sys.stdout.flush()  # what is buffered now would otherwise be written by every rank
    sys.stderr.flush()
    parent = os.getpid()
    rank = 0
    for r in range(1, n):
        pid = os.fork()
        if pid == 0:
            rank = r
            _children.clear()
            threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
            break
        _children.append(pid)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))
    if rank == 0:
        threading.Thread(target=_watch, args=(n,), daemon=True).start()
        atexit.register(_reap)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _end_with(parent: int) -> None:
    """A forked rank's watch: exit once rank 0 is gone (its error, if any, is printed)."""
    while os.getppid() == parent:
        time.sleep(0.25)
    os._exit(1)


def _watch(n: int) -> None:
    """Rank 0's watch over the forked ranks: one that exits non-zero before the last barrier
    ends the run (an interrupt ends it quietly, each rank saying so itself)."""
    alive = dict(enumerate(_children, start=1))
    while alive:
        for rank, pid in list(alive.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped at exit
                return
            if not done:
                continue
            del alive[rank]
            code = os.waitstatus_to_exitcode(status)
            if code == 0 or _ending.is_set():
                continue
            for other in alive.values():
                _kill(other)
            if code not in (130, -signal.SIGINT):
                print(f"unmask: rank {rank} of {n} exited with {code}; run ended", file=sys.stderr)
            os._exit(130 if code in (130, -signal.SIGINT) else 1)
        time.sleep(0.1)


def _reap() -> None:
    """At rank 0's exit: after a run that reached its last barrier, give the forked ranks a
    moment to finish; after a failure or an interrupt of rank 0, stop them at once."""
    finished = _ending.is_set()
    _ending.set()
    deadline = time.monotonic() + (10 if finished else 0)
    for pid in _children:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:  # reaped by the watch
                break
            time.sleep(0.05)
        else:
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

"""BlockSchedule policies: where the next semi-autoregressive block ends and its step budget.

Fixed LLaDA blocks here; adaptive schedules (CadLLM's B_t, S_t) join this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from unmask.policies.base import Policy


@dataclass(frozen=True)
class Block:
    start: int  # offset inside the generated region
    end: int  # exclusive
    steps: int  # step budget S: a quota rule spreads the block's masks over it

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class BlockSchedule(Policy):
    role: ClassVar[str] = "blocks"

    def next_block(self, start: int, ctx) -> Block:
        """The block that begins at gen offset `start` (ctx: the request's StepContext)."""
        raise NotImplementedError


@dataclass
class FixedBlocks(BlockSchedule):
    """LLaDA's schedule: blocks of `len` (default: the request's block length), `steps` forward
    passes in all (default: gen_len, one token per step) split evenly over the blocks."""

    name: ClassVar[str] = "fixed"
    len: int | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.len is not None and self.len <= 0:
            raise ValueError(f"len must be > 0, got {self.len}")
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")

    def next_block(self, start: int, ctx) -> Block:
        length = self.len or ctx.block_len
        end = min(start + length, ctx.gen_len)
        total = self.steps or ctx.gen_len
        # LLaDA divides steps evenly across equal blocks; a short last block gets its share.
        steps = max(1, round(total * (end - start) / ctx.gen_len))
        return Block(start, end, steps)


REGISTRY: dict[str, type[BlockSchedule]] = {c.name: c for c in (FixedBlocks,)}

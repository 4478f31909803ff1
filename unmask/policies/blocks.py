"""BlockSchedule policies: where the next semi-autoregressive block ends and its step budget.

Fixed LLaDA blocks and CadLLM's confidence-driven B_t and S_t.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from unmask.policies.base import Choice, ConfidenceHistory, Int, Policy


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
    bounds: ClassVar[dict[str, str]] = {"len": ">= 1", "steps": ">= 1"}
    space: ClassVar[dict] = {"len": Int(4, 64, log=True), "steps": Int(8, "gen_len", log=True)}
    len: int | None = None
    steps: int | None = None

    def next_block(self, start: int, ctx) -> Block:
        length = self.len or ctx.block_len
        end = min(start + length, ctx.gen_len)
        total = self.steps or ctx.gen_len
        # LLaDA divides steps evenly across equal blocks; a short last block gets its share.
        steps = max(1, round(total * (end - start) / ctx.gen_len))
        return Block(start, end, steps)


REGISTRY: dict[str, type[BlockSchedule]] = {c.name: c for c in (FixedBlocks,)}


@dataclass
class AdaptiveBlocks(BlockSchedule):
    """CadLLM's B_t and S_t (released code): the first block is `init_len` long with `init_steps`;
    later blocks grow with the mean confidence c of the last two forwards,
    B = min_len + int((max_len - min_len) * c), and their step budget grows as c falls,
    S = int(s * B / init_len) with s = init_steps + int((max_steps - init_steps) * (1 - c)).
    With a threshold rule S only sets the slope of the tau sawtooth."""

    name: ClassVar[str] = "cadllm"
    bounds: ClassVar[dict[str, str]] = {
        "init_len": ">= 1",
        "min_len": ">= 1",
        "max_len": ">= 1",
        "init_steps": ">= 1",
        "max_steps": ">= 1",
    }
    space: ClassVar[dict] = {
        "init_len": Int(4, 64, log=True),
        "min_len": Int(2, 32, log=True),
        "max_len": Int("min_len", 128, log=True),
        "init_steps": Int(4, 64, log=True),
        "max_steps": Int("init_steps", 128, log=True),
        "adaptive_len": Choice((True, False)),
        "adaptive_steps": Choice((True, False)),
    }
    init_len: int = 24
    min_len: int = 4
    max_len: int = 64
    init_steps: int = 24
    max_steps: int = 90
    adaptive_len: bool = True
    adaptive_steps: bool = True
    hist: ConfidenceHistory = field(default_factory=ConfidenceHistory, init=False, repr=False)
    _head_first: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_len > self.max_len:
            raise ValueError(f"need min_len <= max_len, got {self.min_len}, {self.max_len}")

    def reset(self, req) -> None:
        self.hist = ConfidenceHistory()
        self.info = {}
        self._head_first = req.block_head_first

    def observe(self, event) -> None:
        self.hist.observe(event, self._head_first)
        self.info["confidence"] = self.hist.values[-1] if self.hist.values else None

    def next_block(self, start: int, ctx) -> Block:
        values = self.hist.values
        # The code takes the mean of the last two in float32, for B and S alike.
        c2 = float(torch.tensor(values[-2:], dtype=torch.float32).mean()) if values else 0.0
        if values and self.adaptive_len:
            length = self.min_len + int((self.max_len - self.min_len) * c2)
        else:
            length = self.init_len
        # clamped into [min_len, max_len] whatever chose it, the first block too (as the code)
        length = min(max(length, self.min_len), self.max_len)
        length = min(length, ctx.gen_len - start)
        if values and self.adaptive_steps:
            c = min(max(c2, 0.0), 1.0)
            s = self.init_steps + int((self.max_steps - self.init_steps) * (1 - c))
            s = min(max(s, self.init_steps), self.max_steps)
            steps = max(1, int(s * length / self.init_len))
        else:
            steps = self.init_steps
        self.info.update(block_len=length, block_steps=steps)
        return Block(start, start + length, steps)


REGISTRY.update({c.name: c for c in (AdaptiveBlocks,)})

"""RefreshPolicies: turn per-request state into this step's RowPlan (rows recomputed per layer).

`none` (no cache), Fast-dLLM's prefix and dual caches; dKV-Cache, dLLM-Cache and Dynamic-dLLM's
DCU join this module. The model only ever sees the plan, never the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from unmask.cache import LayerProbe
from unmask.policies.base import Policy


@dataclass
class FixedPlan:
    """The same rows at every layer; the forward carries only these rows."""

    mask: Tensor  # [B, T] bool

    def fixed_rows(self) -> Tensor:
        return self.mask

    def rows(self, layer: int, probe: LayerProbe) -> Tensor:
        return self.mask


@dataclass
class FullLayeredPlan:
    """Every row at every layer through the per-layer path, writing the feature cache too: the
    cold start of a policy that reuses attention/MLP contributions."""

    def fixed_rows(self) -> None:
        return None

    def rows(self, layer: int, probe: LayerProbe) -> None:
        return None


@dataclass
class RefreshPolicy(Policy):
    role: ClassVar[str] = "refresh"
    # True when plans differ per layer and reuse cached attention/MLP contributions.
    features: ClassVar[bool] = False

    def plan(self, ctx) -> FixedPlan | FullLayeredPlan:
        raise NotImplementedError


@dataclass
class NoCache(RefreshPolicy):
    """Vanilla: recompute the whole canvas at every layer of every step."""

    name: ClassVar[str] = "none"

    def plan(self, ctx) -> FixedPlan:
        return FixedPlan(all_rows(ctx))


def all_rows(ctx) -> Tensor:
    return torch.ones_like(ctx.canvas, dtype=torch.bool)  # [B, T]


def span_rows(ctx, lo: int, hi: int) -> Tensor:
    """Rows of canvas columns [lo, hi) for every sample."""
    mask = torch.zeros_like(ctx.canvas, dtype=torch.bool)
    mask[:, lo:hi] = True
    return mask


@dataclass
class DualCache(RefreshPolicy):
    """Fast-dLLM dual cache: a full forward at each block's first step caches K/V of the whole
    canvas (prompt, finished blocks, this block, future masks); the block's later steps recompute
    only the block's rows, attending to the prefix and suffix K/V cached at the block start."""

    name: ClassVar[str] = "dual"

    def plan(self, ctx) -> FixedPlan:
        if ctx.step_in_block == 0:
            return FixedPlan(all_rows(ctx))
        cols = ctx.cols(ctx.block)
        return FixedPlan(span_rows(ctx, cols.start, cols.stop))


@dataclass
class PrefixCache(RefreshPolicy):
    """Fast-dLLM prefix cache: a full forward at each block's first step; later steps reuse the
    K/V left of the block and recompute the block and everything right of it."""

    name: ClassVar[str] = "prefix"

    def plan(self, ctx) -> FixedPlan:
        if ctx.step_in_block == 0:
            return FixedPlan(all_rows(ctx))
        return FixedPlan(span_rows(ctx, ctx.cols(ctx.block).start, ctx.canvas.shape[1]))


REGISTRY: dict[str, type[RefreshPolicy]] = {c.name: c for c in (NoCache, PrefixCache, DualCache)}

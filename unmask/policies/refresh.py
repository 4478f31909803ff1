"""RefreshPolicies: turn per-request state into this step's RowPlan (rows recomputed per layer).

`none` (no cache), Fast-dLLM's prefix and dual caches; dKV-Cache, dLLM-Cache and Dynamic-dLLM's
DCU join this module. The model only ever sees the plan, never the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class DKVCache(RefreshPolicy):
    """dKV-Cache-Decode (Ma et al. 2025), delayed caching. Per block, steps 0 and 1 and every
    `interval`-th step are full forwards; other steps recompute every still-masked position of
    the canvas plus the positions revealed at the previous step (cached from the next step on,
    once they carry their decoded identity); all other rows reuse K/V. Dream also recomputes a
    row while the position it predicts (the next one) is masked."""

    name: ClassVar[str] = "dkv"
    interval: int = 8
    _ctx: object = field(default=None, init=False, repr=False)
    _prev: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"interval must be > 0, got {self.interval}")

    def reset(self, req) -> None:
        self._ctx, self._prev = req, None

    def observe(self, event) -> None:
        ctx = self._ctx
        prev = torch.zeros_like(ctx.canvas, dtype=torch.bool)
        prev[:, ctx.cols(event.block)] = event.reveal
        self._prev = prev

    def plan(self, ctx) -> FixedPlan:
        i = ctx.step_in_block
        if i <= 1 or i % self.interval == 0 or self._prev is None:
            return FixedPlan(all_rows(ctx))
        masked = ctx.masked
        rows = masked | self._prev
        if ctx.logit_shift:
            rows[:, :-1] |= masked[:, 1:]
        return FixedPlan(rows)


@dataclass
class DLLMCache(RefreshPolicy):
    """dLLM-Cache (Liu et al. 2025). A global forward counter t: prompt rows are recomputed when
    t % kp == 0, response rows when t % kr == 0; in between, each layer recomputes the
    int(G * rho) response rows whose fresh V is least cosine-similar to the cached V (V itself
    is refreshed for every response row), and every other row adds its cached attention and
    MLP contributions to its current input. `layer0_full`: the authors' later code always
    recomputes layer 0."""

    name: ClassVar[str] = "dllm-cache"
    features: ClassVar[bool] = True
    kp: int = 50
    kr: int = 7
    rho: float = 0.25
    layer0_full: bool = False

    def __post_init__(self) -> None:
        if self.kp <= 0 or self.kr <= 0:
            raise ValueError(f"kp and kr must be > 0, got {self.kp}, {self.kr}")
        if not 0 <= self.rho <= 1:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")

    def plan(self, ctx) -> DLLMCachePlan:
        return DLLMCachePlan(self, ctx)


@dataclass
class DLLMCachePlan:
    policy: DLLMCache
    ctx: object

    def fixed_rows(self) -> None:
        return None

    def rows(self, layer: int, probe: LayerProbe) -> Tensor | None:
        p, ctx = self.policy, self.ctx
        t = ctx.nfe  # forwards already run in this request
        full = p.layer0_full and layer == 0
        refresh_prompt = full or t % p.kp == 0
        refresh_gen = full or t % p.kr == 0
        if refresh_prompt and refresh_gen:
            return None
        P, G = ctx.gen_start, ctx.gen_len
        mask = torch.zeros_like(ctx.canvas, dtype=torch.bool)
        if refresh_prompt:
            mask[:, :P] = True
        if refresh_gen:
            mask[:, P:] = True
            return mask
        n = int(G * p.rho)
        if n > 0:
            fresh = probe.values()[:, :, P:]  # [B, Hkv, G, Dh]
            cached = probe.cache.v[layer][:, :, P:]
            sim = torch.cosine_similarity(_flat_heads(fresh), _flat_heads(cached), dim=-1)  # [B, G]
            pick = sim.topk(n, dim=-1, largest=False).indices
            mask[:, P:].scatter_(1, pick, True)
            probe.write_values = torch.zeros_like(mask)
            probe.write_values[:, P:] = True
        return mask


def _flat_heads(v: Tensor) -> Tensor:
    """[B, H, N, Dh] -> [B, N, H * Dh]: one vector per row, all heads concatenated."""
    B, H, N, Dh = v.shape
    return v.transpose(1, 2).reshape(B, N, H * Dh)


REGISTRY.update({c.name: c for c in (DKVCache, DLLMCache)})

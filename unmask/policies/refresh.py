"""RefreshPolicies: turn per-request state into this step's RowPlan (rows recomputed per layer).

`none` (no cache: every row, every layer) here; prefix/dual (Fast-dLLM), dKV-Cache, dLLM-Cache and
Dynamic-dLLM's DCU join this module. The model only ever sees the plan, never the policy.
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
        return FixedPlan(torch.ones_like(ctx.canvas, dtype=torch.bool))


REGISTRY: dict[str, type[RefreshPolicy]] = {c.name: c for c in (NoCache,)}

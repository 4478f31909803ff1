"""RefreshPolicies: turn per-request state into this step's RowPlan (rows recomputed per layer).

`none` (no cache), Fast-dLLM's prefix and dual caches; dKV-Cache, dLLM-Cache and Dynamic-dLLM's
DCU join this module. Each row of a batch has its own policy instance and plan (step.py); the
runner only ever sees plans, never a policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from unmask.cache import LayerSignals
from unmask.policies.base import Choice, Float, Int, Policy
from unmask.step import EVERY_ROW, LayerRows, RowPlan, RowView


@dataclass
class FixedPlan:
    """The same rows at every layer; the runner carries only these rows."""

    mask: Tensor  # [1, T] bool
    gen_only: bool | None = None  # no prompt row among them (None: not known without a read)

    def fixed_rows(self) -> Tensor:
        return self.mask

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        return LayerRows(self.mask, gen_only=self.gen_only)


@dataclass
class FullLayeredPlan:
    """Every row at every layer through the per-layer path, writing the feature cache too."""

    def fixed_rows(self) -> None:
        return None

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        return EVERY_ROW


@dataclass
class ColdStart:
    """A row's first forward under a policy that reuses attention/MLP contributions: every row
    at every layer (its cache is empty), while the policy's own plan still sees each layer's
    signals, so that per-layer state (previous inputs) starts from this step."""

    inner: RowPlan

    def fixed_rows(self) -> None:
        return None

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        self.inner.layer_rows(layer, signals)
        return EVERY_ROW


@dataclass
class RefreshPolicy(Policy):
    role: ClassVar[str] = "refresh"

    def plan(self, ctx: RowView) -> RowPlan:
        """This step's plan for the row, once its cache holds an earlier step."""
        raise NotImplementedError

    def cold_plan(self, ctx: RowView) -> RowPlan:
        """The row's first forward, when its cache is empty: every row at every layer."""
        return FixedPlan(all_rows(ctx))


@dataclass
class FeatureRefresh(RefreshPolicy):
    """A policy whose plans differ per layer and reuse cached attention/MLP contributions: its
    cold start fills the feature cache too, and lets its plan record per-layer state."""

    def cold_plan(self, ctx: RowView) -> RowPlan:
        return ColdStart(self.plan(ctx))


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


def scheduled_rows(ctx, prompt: bool, response: bool) -> Tensor | None:
    """Rows an interval refresh recomputes this step: the prompt's, the response's (every
    generated position), both (None: every row), or neither (an empty mask to add to)."""
    if prompt and response:
        return None
    mask = torch.zeros_like(ctx.canvas, dtype=torch.bool)
    mask[:, : ctx.gen_start] = prompt
    mask[:, ctx.gen_start :] = response
    return mask


@dataclass
class DKVCache(RefreshPolicy):
    """dKV-Cache-Decode (Ma et al. 2025), delayed caching. Per block, the first `full_steps`
    steps (2, as the authors' LLaDA code; their Dream code has 1) and every `interval`-th step
    are full forwards; other steps recompute every still-masked position of
    the canvas plus the positions revealed at the previous step (cached from the next step on,
    once they carry their decoded identity); all other rows reuse K/V. For Dream the rule moves
    one row left (the authors' shift_type "un", the default): row p is recomputed while position
    p+1 is masked or was revealed last step, so a masked p whose successor is decoded keeps its
    cached mask-token K/V until the next refresh. shift=un_right (their other variant) also
    recomputes row p while p itself is not cached yet."""

    name: ClassVar[str] = "dkv"
    bounds: ClassVar[dict[str, str]] = {"interval": ">= 1", "full_steps": ">= 1"}
    space: ClassVar[dict] = {"interval": Int(2, 16, log=True), "shift": Choice(("un", "un_right"))}
    untuned: ClassVar[tuple[str, ...]] = ("full_steps",)  # a reference's constant
    interval: int = 8
    shift: str = "un"
    full_steps: int = 2
    _ctx: object = field(default=None, init=False, repr=False)
    _prev: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shift not in ("un", "un_right"):
            raise ValueError(f"shift must be un or un_right, got {self.shift!r}")

    def reset(self, req) -> None:
        self._ctx, self._prev = req, None

    def observe(self, event) -> None:
        ctx = self._ctx
        prev = torch.zeros_like(ctx.canvas, dtype=torch.bool)
        prev[:, ctx.cols(event.block)] = event.reveal
        self._prev = prev

    def plan(self, ctx) -> FixedPlan:
        i = ctx.step_in_block
        if i < self.full_steps or i % self.interval == 0 or self._prev is None:
            return FixedPlan(all_rows(ctx))
        fresh = ctx.masked | self._prev  # not yet cached with its decoded identity
        if not ctx.logit_shift:
            return FixedPlan(fresh)
        # Dream (the authors' shift_type "un"): row p is recomputed while p+1 is not cached yet.
        rows = torch.zeros_like(fresh)
        rows[:, :-1] = fresh[:, 1:]
        if self.shift == "un_right":
            rows |= fresh
        return FixedPlan(rows)


@dataclass
class DLLMCache(FeatureRefresh):
    """dLLM-Cache (Liu et al. 2025). A global forward counter t: prompt rows are recomputed when
    t % kp == 0, response rows when t % kr == 0; in between, each layer recomputes the
    int(G * rho) response rows whose fresh V is least cosine-similar to the cached V (V itself
    is refreshed for every response row), and every other row adds its cached attention and
    MLP contributions to its current input. `layer0_full`: the authors' later code always
    recomputes layer 0."""

    name: ClassVar[str] = "dllm-cache"
    bounds: ClassVar[dict[str, str]] = {"kp": ">= 1", "kr": ">= 1", "rho": "[0, 1]"}
    space: ClassVar[dict] = {
        "kp": Int(4, 100, log=True),
        "kr": Int(1, 20, log=True),
        "rho": Float(0.0, 0.5, step=0.01),
        "layer0_full": Choice((True, False)),
    }
    kp: int = 50
    kr: int = 7
    rho: float = 0.25
    layer0_full: bool = False

    def plan(self, ctx) -> DLLMCachePlan:
        return DLLMCachePlan(self, ctx)


@dataclass
class DLLMCachePlan:
    policy: DLLMCache
    ctx: object

    def fixed_rows(self) -> None:
        return None

    def refreshes(self, layer: int) -> tuple[bool, bool]:
        """Whether this layer recomputes every prompt row, every generated row, at this step."""
        p, t = self.policy, self.ctx.nfe  # forwards already run in this request
        full = p.layer0_full and layer == 0
        return full or t % p.kp == 0, full or t % p.kr == 0

    def count(self, layer: int) -> int:
        prompt, gen = self.refreshes(layer)
        G = self.ctx.gen_len
        return self.ctx.gen_start * prompt + (G if gen else int(G * self.policy.rho))

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        p, ctx = self.policy, self.ctx
        refresh_prompt, refresh_gen = self.refreshes(layer)
        mask = scheduled_rows(ctx, refresh_prompt, refresh_gen)
        bound, gen_only = self.count(layer), not refresh_prompt
        if mask is None or refresh_gen:
            return LayerRows(mask, bound, gen_only)
        P, G = ctx.gen_start, ctx.gen_len
        n = int(G * p.rho)
        if n > 0:
            pick = signals.v_moved().topk(n, dim=-1).indices
            mask[:, P:].scatter_(1, pick, True)
        # The fresh V measured for the signal replaces the cached V of all generated rows (it
        # has been computed anyway, and both released codes keep it).
        return LayerRows(mask, bound, gen_only, fresh_v=n > 0)


REGISTRY.update({c.name: c for c in (DKVCache, DLLMCache)})


PAPER_BUDGET = 32  # Dynamic-dLLM's B_layer = B_window at gen_len 256


@dataclass
class DCU(FeatureRefresh):
    """Dynamic-dLLM's Dynamic Cache Updating. Each layer recomputes a mandatory window of
    `window`+1 generated positions around the key token (the last revealed position) plus the
    `budget` generated rows whose layer input moved most since the previous step (cosine
    distance of the normalised input; proxy=v: of V, as the released code). Paper form: layer
    budgets proportional to each layer's mean movement at the previous step, summing to
    budget * n_layers; alloc=uniform is the released code's. budget/window default to the
    paper's B = W = 32 (its setting at gen_len 256, where its budget sweep saturates), scaled
    up by its rule gen_len/8 beyond that (64 at 512): max(32, gen_len/8). The rule is never
    applied below 256, where the paper gives no value (at gen_len 64 it would leave a 9-row
    window inside a 32-row block). Prompt rows are recomputed every `prompt_interval` steps,
    all generated rows every `gen_interval` (none: never after the first step); the rest add
    cached contributions. budget=0 keeps the window alone (the ablation that shows a token stuck
    without it); window=0 keeps the budget alone.
    fresh_v (default, as the released code): V of every generated row is refreshed each step
    (computed anyway), K and the attention/MLP contributions only for the chosen rows.
    budget_layers: the layer count the total budget is computed over (none: the model's, the
    paper's budget * n_layers). The released code hard-codes 32, LLaDA-8B's depth: from its
    second planned step each layer gets int(budget * 32 * w_l), w_l = 1/n_layers under its
    uniform weights, so budget_layers=32 reproduces it on any depth (on 32 layers it changes
    nothing)."""

    name: ClassVar[str] = "dcu"
    bounds: ClassVar[dict[str, str]] = {
        "budget": ">= 0",
        "window": ">= 0",
        "prompt_interval": ">= 1",
        "gen_interval": ">= 1",
        "budget_layers": ">= 1",
    }
    untuned: ClassVar[tuple[str, ...]] = ("budget_layers",)  # a reference's constant
    space: ClassVar[dict] = {
        "budget": Int(0, "gen_len"),
        "window": Int(0, "gen_len"),
        "proxy": Choice(("x", "v")),
        "alloc": Choice(("proportional", "uniform")),
        "layer0_full": Choice((True, False)),
        "prompt_interval": Choice((None, 4, 16, 64)),
        "gen_interval": Choice((None, 4, 16, 64)),
        "fresh_v": Choice((True, False)),
    }
    budget: int | None = None
    window: int | None = None
    proxy: str = "x"
    alloc: str = "proportional"
    layer0_full: bool = False
    prompt_interval: int | None = None
    gen_interval: int | None = None
    fresh_v: bool = True
    budget_layers: int | None = None
    _ctx: object = field(default=None, init=False, repr=False)
    _last: DCUPlan | None = field(default=None, init=False, repr=False)  # the previous step's
    _s_prev: Tensor | None = field(default=None, init=False, repr=False)
    _key: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proxy not in ("x", "v"):
            raise ValueError(f"proxy must be x or v, got {self.proxy!r}")
        if self.alloc not in ("proportional", "uniform"):
            raise ValueError(f"alloc must be proportional or uniform, got {self.alloc!r}")

    def reset(self, req) -> None:
        self._ctx = req
        self._last = None
        self._s_prev = None
        self._key = torch.full((req.batch,), -1, dtype=torch.long, device=req.canvas.device)
        self.info = {}

    def sizes(self, ctx) -> tuple[int, int]:
        auto = max(PAPER_BUDGET, ctx.gen_len // 8)
        return (
            auto if self.budget is None else self.budget,
            auto if self.window is None else self.window,
        )

    def plan(self, ctx) -> DCUPlan:
        last = self._last
        measured = False  # a previous step measured some layer's dynamism
        if last is not None:  # last step's per-layer dynamism, as its plan recorded it
            done = [s for s in last.dynamism if s is not None]
            measured = bool(done)
            zero = torch.zeros((), device=done[0].device) if done else torch.zeros(())
            self._s_prev = torch.stack([zero if s is None else s for s in last.dynamism]).cpu()
        budget, window = self.sizes(ctx)
        span = window_span(window, ctx.gen_len)
        room = ctx.gen_len - span  # rows outside the window
        n = ctx.n_layers
        over = self.budget_layers or n  # the total is budget * over, spread over n layers
        if not measured:  # nothing measured yet (the first cached step): the budget, each layer
            budgets = [min(budget, room)] * n
        elif self.alloc == "uniform" or float(self._s_prev.sum()) <= 0:
            budgets = [min(budget * over // n, room)] * n
        elif self.layer0_full:  # layer 0 recomputes everything: the others share the total
            budgets = [room] + water_fill(self._s_prev[1:], budget * over * (n - 1) // n, room)
        else:
            budgets = water_fill(self._s_prev, budget * over, room)
        t = ctx.nfe
        self._last = DCUPlan(
            self,
            ctx,
            budgets,
            window=window_mask(self._key, window, ctx.gen_len),
            span=span,
            refresh_prompt=self.prompt_interval is not None and t % self.prompt_interval == 0,
            refresh_gen=self.gen_interval is not None and t % self.gen_interval == 0,
            prev_in=[None] * ctx.n_layers if last is None else last.inputs,
        )
        return self._last

    def observe(self, event) -> None:
        # Key token: the rightmost position revealed at this step (kept when none was).
        ctx = self._ctx
        offs = torch.arange(event.block.start, event.block.end, device=event.reveal.device)
        right = torch.where(event.reveal, offs, -1).amax(-1)  # [B]
        self._key = torch.where(right >= 0, right, self._key)
        budget, window = self.sizes(ctx)
        self.info = {"dcu_budget": budget, "dcu_window": window}


def window_span(window: int, G: int) -> int:
    """Rows in the mandatory window [p - W//2, p + W//2]: 2*(W//2)+1 positions, as the released
    code takes (W+1 for even W; W = 0: the key token alone)."""
    return min(2 * (window // 2) + 1, G)


def window_mask(key: Tensor, window: int, G: int) -> Tensor:
    """[B, G] the window around each row's key position (-1: none revealed yet, the window
    starts at 0), shifted to stay inside the generated region rather than shrunk."""
    span = window_span(window, G)
    start = (key - window // 2).clamp(min=0, max=G - span)
    offs = torch.arange(G, device=key.device)
    return (offs >= start[:, None]) & (offs < start[:, None] + span)


def water_fill(weights: Tensor, total: int, cap: int) -> list[int]:
    """Split `total` over layers in proportion to `weights`, no layer above `cap`; what a capped
    layer cannot take goes to the others in proportion (so a total >= cap * n gives every layer
    all its rows). Floors each share: the sum may fall short of `total` by < n rows."""
    w = weights.double().clamp(min=0)
    out = torch.zeros_like(w)
    active = torch.ones_like(w, dtype=torch.bool)
    left = float(total)
    while bool(active.any()) and left > 0 and float(w[active].sum()) > 0:
        share = torch.where(active, left * w / w[active].sum(), torch.zeros_like(w))
        full = active & (share >= cap)
        if not bool(full.any()):
            out += share
            break
        out[full] = cap
        left -= cap * int(full.sum())
        active &= ~full
    return [int(v) for v in out.floor()]


@dataclass
class DCUPlan:
    """One step of DCU for a row. It records what the next step's plan reads: each layer's
    normalised input (x proxy) and mean movement (the proportional budgets)."""

    policy: DCU
    ctx: RowView
    budgets: list[int]  # rows outside the window, per layer
    window: Tensor  # [1, G] the mandatory window, the same at every layer of this step
    span: int  # rows in it
    refresh_prompt: bool  # interval refreshes due at this step
    refresh_gen: bool
    prev_in: list[Tensor | None]  # the previous step's layer inputs (x proxy)
    inputs: list[Tensor | None] = field(init=False)  # this step's, where measured
    dynamism: list[Tensor | None] = field(init=False)  # mean movement per layer (on the device)

    def __post_init__(self) -> None:
        self.inputs = list(self.prev_in)
        self.dynamism = [None] * len(self.prev_in)

    def fixed_rows(self) -> None:
        return None

    def count(self, layer: int) -> int:
        """Rows per sample: the scheduled prompt rows plus the window and the layer's budget (the
        top-n never lands in the window: n <= the rows outside it), or every generated row."""
        G = self.ctx.gen_len
        gen = G if self.refresh_gen else self.span + self.budgets[layer]
        return self.ctx.gen_start * self.refresh_prompt + gen

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        p, ctx = self.policy, self.ctx
        P = ctx.gen_start
        if p.layer0_full and layer == 0:
            return EVERY_ROW  # recomputed whole: its movement is neither needed nor used
        if p.proxy == "x":
            now = signals.gen_input()  # [1, G, D]
            prev = self.prev_in[layer]
            self.inputs[layer] = now
            if prev is None:
                return EVERY_ROW
            moved = 1 - torch.cosine_similarity(now, prev, dim=-1)  # [1, G]
        elif not signals.warm:  # V against an empty cache: no signal (the next step: even split)
            return EVERY_ROW
        else:
            moved = signals.v_moved()
        self.dynamism[layer] = moved.mean().float()  # stays on the device: no sync in a forward
        mask = scheduled_rows(ctx, self.refresh_prompt, self.refresh_gen)
        bound, gen_only, fresh = self.count(layer), not self.refresh_prompt, p.fresh_v
        if mask is None or self.refresh_gen:
            return LayerRows(mask, None if mask is None else bound, gen_only, fresh)
        win, n = self.window, self.budgets[layer]
        if n > 0:
            pick = moved.masked_fill(win, float("-inf")).topk(n, dim=-1).indices
            win = win.scatter(1, pick, True)
        mask[:, P:] |= win
        return LayerRows(mask, bound, gen_only, fresh)


REGISTRY.update({c.name: c for c in (DCU,)})

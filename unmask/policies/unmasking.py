"""UnmaskRules: which masked positions of the current block to reveal at this step.

The engine, not the rule, guarantees at least one reveal per live row and no writes outside
the block. LLaDA's per-step quota here; threshold, factor, APD and CadLLM's tau_t join it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from unmask.policies.base import Choice, Float, Policy
from unmask.policies.scoring import PROBS, confidence_probs


def top_k_mask(conf: Tensor, masked: Tensor, k: Tensor) -> Tensor:
    """The k[b] most confident masked positions of each row: conf, masked [B, L]; k [B]."""
    score = conf.masked_fill(~masked, float("-inf"))
    order = score.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return (rank < k[:, None]) & masked


@dataclass
class UnmaskRule(Policy):
    role: ClassVar[str] = "unmask"

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        """conf [B, L] of the block, masked [B, L] -> reveal [B, L] bool."""
        raise NotImplementedError


@dataclass
class Quota(UnmaskRule):
    """LLaDA: the masks present at the block start are spread evenly over the block's step
    budget (the first `n mod S` steps take one extra), top-k by confidence at each step."""

    name: ClassVar[str] = "quota"
    _n0: Tensor | None = field(default=None, init=False, repr=False)

    def reset(self, req) -> None:
        self._n0 = None

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        if ctx.step_in_block == 0:  # the masks present when the block opens
            self._n0 = masked.sum(-1)  # [B]
        n0 = self._n0
        steps = ctx.block.steps
        i = ctx.step_in_block
        k = n0 // steps + (i < n0 % steps).long()
        if i >= steps - 1:
            k = masked.sum(-1)  # the budget is spent: finish the block
        return top_k_mask(conf, masked, k)


def top1(conf: Tensor, masked: Tensor) -> Tensor:
    """The single most confident masked position of each row that has one."""
    return top_k_mask(conf, masked, masked.any(-1).long())


def dream_block_start(flag: bool | None, ctx) -> bool:
    """Fast-dLLM's and CadLLM's Dream code reveal only a block's first position, greedily, at the
    block's first step (None: as the model's `block_head_first` says: on for Dream, off for
    LLaDA)."""
    on = ctx.block_head_first if flag is None else flag
    return on and ctx.step_in_block == 0


def first_position(masked: Tensor) -> Tensor:
    reveal = torch.zeros_like(masked)
    reveal[:, 0] = masked[:, 0]
    return reveal


@dataclass
class Threshold(UnmaskRule):
    """Fast-dLLM: every masked position with confidence >= tau, and always the most confident.
    dream_first: see dream_block_start."""

    name: ClassVar[str] = "threshold"
    bounds: ClassVar[dict[str, str]] = {"tau": "[0, 1]"}
    space: ClassVar[dict] = {"tau": Float(0.3, 1.0, step=0.01)}
    untuned: ClassVar[tuple[str, ...]] = ("dream_first",)  # a family's quirk, not a knob
    tau: float = 0.9
    dream_first: bool | None = None

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        if dream_block_start(self.dream_first, ctx):
            return first_position(masked)
        return top1(conf, masked) | ((conf >= self.tau) & masked)


@dataclass
class Factor(UnmaskRule):
    """Fast-dLLM's factor rule: rank the masked positions by confidence; the n-th (1-based) is
    revealed while conf_n >= 1 - factor/(n+1) holds for it and all before it (the first always).
    As in the authors' code, a run that fails only at the last masked position reveals all.
    dream_first: see dream_block_start (Fast-dLLM's Dream loop commits a block's first position
    at its block-start step whatever the rule)."""

    name: ClassVar[str] = "factor"
    bounds: ClassVar[dict[str, str]] = {"factor": "> 0"}
    space: ClassVar[dict] = {"factor": Float(0.05, 4.0, step=0.05)}
    untuned: ClassVar[tuple[str, ...]] = ("dream_first",)
    factor: float = 1.0
    dream_first: bool | None = None

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        if dream_block_start(self.dream_first, ctx):
            return first_position(masked)
        m = masked.sum(-1)  # [B]
        ranked = conf.masked_fill(~masked, float("-inf")).sort(-1, descending=True).values
        # float64 thresholds, as the reference's Python floats (float32 rounds 1 - f/(n+1)).
        n = torch.arange(1, conf.shape[-1] + 1, device=conf.device, dtype=torch.float64)
        bar = 1 - self.factor / (n + 1)
        bar[0] = float("-inf")
        ok = (ranked >= bar) & (n <= m[:, None])
        k = ok.long().cumprod(-1).sum(-1)
        k = torch.where(k == m - 1, m, k)
        return top_k_mask(conf, masked, k)


REGISTRY: dict[str, type[UnmaskRule]] = {c.name: c for c in (Quota, Threshold, Factor)}


@dataclass
class APD(UnmaskRule):
    """Dynamic-dLLM's Adaptive Parallel Decoding: every position keeps its own threshold, from
    tau at the request start, moved each step by tau_i -= alpha*c_i - beta*H_i, where c_i = 1 -
    the runner-up probability and H_i = 1 - cos(p_i, p_i at the previous step). A masked
    position of the block is revealed when its confidence >= tau_i (the top-1 always).
    scope=gen: every generated position's threshold moves at every step, future blocks too (the
    released code's per-token mode, needs all positions' logits); scope=block: only the block's.
    probs: the distributions p_i in float64 (default), or in the model's dtype (probs=model,
    scoring.confidence_probs); the thresholds are kept in float64 either way."""

    name: ClassVar[str] = "apd"
    bounds: ClassVar[dict[str, str]] = {"tau": "[0, 1]", "alpha": ">= 0", "beta": ">= 0"}
    space: ClassVar[dict] = {
        "tau": Float(0.3, 1.0, step=0.01),
        "alpha": Float(0.0, 0.02, step=0.0005),
        "beta": Float(0.0, 0.02, step=0.0005),
        "scope": Choice(("gen", "block")),
    }
    untuned: ClassVar[tuple[str, ...]] = ("probs",)
    tau: float = 0.9
    alpha: float = 0.001
    beta: float = 0.0008
    scope: str = "gen"
    probs: str = "float64"
    _thr: Tensor | None = field(default=None, init=False, repr=False)
    _prev: Tensor | None = field(default=None, init=False, repr=False)
    _seen: Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope not in ("gen", "block"):
            raise ValueError(f"scope must be gen or block, got {self.scope!r}")
        if self.probs not in PROBS:
            raise ValueError(f"probs must be float64 or model, got {self.probs!r}")

    @property
    def wants_gen_logits(self) -> bool:
        return self.scope == "gen"

    def reset(self, req) -> None:
        self._thr = torch.full(
            (req.batch, req.gen_len), self.tau, dtype=torch.float64, device=req.canvas.device
        )
        self._prev = self._seen = None
        self.info = {}

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        lo, hi = ctx.block.start, ctx.block.end
        if self.scope == "gen":
            logits, span = ctx.gen_logits, slice(0, ctx.gen_len)
        else:
            logits, span = ctx.logits, slice(lo, hi)
        probs = confidence_probs(logits, self.probs, ctx)  # [B, S, V]
        if self._prev is None:
            B, G = self._thr.shape
            self._prev = torch.zeros(B, G, probs.shape[-1], dtype=probs.dtype, device=probs.device)
            self._seen = torch.zeros(B, G, dtype=torch.bool, device=probs.device)
        seen = self._seen[:, span]
        runner_up = probs.topk(2, dim=-1).values[..., 1]  # [B, S]
        c = 1 - runner_up
        h = 1 - torch.cosine_similarity(probs, self._prev[:, span], dim=-1)
        step = torch.where(seen, self.alpha * c - self.beta * h, torch.zeros_like(c))
        self._thr[:, span] -= step
        self._prev[:, span] = probs
        self._seen[:, span] = True
        thr = self._thr[:, lo:hi]
        self.info = {"apd_tau_mean": float(thr[masked].mean()) if bool(masked.any()) else None}
        return top1(conf, masked) | ((conf >= thr) & masked)


REGISTRY.update({c.name: c for c in (APD,)})


@dataclass
class CadThreshold(UnmaskRule):
    """CadLLM's tau_t (released code): inside each block tau falls linearly from tau_base to
    tau_min over the block's step budget S and then stays, tau(i) = max(tau_base*(1 - i/S) +
    tau_min*(i/S), tau_min), restarting at every block (a sawtooth); the top-1 and every masked
    position with confidence >= tau are revealed. global_decay: the paper's Eq. 5 instead,
    tau = tau_base*(1 - g) + tau_min*g on the generation progress g at the block start.
    dream_first (default: on for Dream, as both CadLLM's and Fast-dLLM's Dream code): a block's
    first step reveals only its first position."""

    name: ClassVar[str] = "cadllm"
    bounds: ClassVar[dict[str, str]] = {"tau_base": "[0, 1]", "tau_min": "[0, 1]"}
    space: ClassVar[dict] = {
        "tau_base": Float(0.3, 1.0, step=0.01),
        "tau_min": Float(0.05, "tau_base", step=0.01),
        "global_decay": Choice((True, False)),
    }
    untuned: ClassVar[tuple[str, ...]] = ("dream_first",)
    tau_base: float = 0.85
    tau_min: float = 0.40
    global_decay: bool = False
    dream_first: bool | None = None

    def tau(self, ctx) -> float:
        b = ctx.block
        if self.global_decay:
            g = b.start / ctx.gen_len
            return self.tau_base * (1 - g) + self.tau_min * g
        x = ctx.step_in_block / b.steps
        return max(self.tau_base * (1 - x) + self.tau_min * x, self.tau_min)

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        if dream_block_start(self.dream_first, ctx):
            self.info = {"tau": None}
            return first_position(masked)
        tau = self.tau(ctx)
        self.info = {"tau": tau}
        return top1(conf, masked) | ((conf >= tau) & masked)


REGISTRY.update({c.name: c for c in (CadThreshold,)})

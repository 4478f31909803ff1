"""Scorers: logits of the rows a decision needs -> candidate ids and their confidence.

Max-probability (LLaDA's low-confidence remasking), random confidence, and CadLLM's adaptive
top-V renormalised confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from unmask.policies.base import Choice, ConfidenceHistory, Int, Policy


def row_rand(shape: tuple[int, ...], gens: list[torch.Generator], dtype=torch.float32) -> Tensor:
    """Uniform draws of `shape` = [B, ...], row b from its own generator gens[b] (on the CPU, so
    a seed gives the same draws on every device); for one row the same numbers as one draw."""
    return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype) for g in gens])


PROBS = ("float64", "model")


def confidence_probs(logits: Tensor, probs: str, ctx) -> Tensor:
    """softmax of float32 logits [B, L, V] in float64 (LLaDA's reference), or in the model's
    dtype (probs=model: dLLM-Cache's and Dynamic-dLLM's code, which in bfloat16 rounds
    confidences near 1.0 together, so ties break by position). The logits are the model-dtype
    values upcast, so casting back recovers them exactly."""
    if probs not in PROBS:
        raise ValueError(f"probs must be float64 or model, got {probs!r}")
    return torch.softmax(logits.double() if probs == "float64" else logits.to(ctx.model_dtype), -1)


def sample_candidates(logits: Tensor, temperature: float, gens: list[torch.Generator]) -> Tensor:
    """argmax at temperature 0, else Gumbel-max sampling (the LLaDA reference's noise, in
    log space: argmax(l/T + g) = argmax(exp(l) / (-log u)^T))."""
    if temperature <= 0:
        return logits.argmax(-1)
    u = row_rand(tuple(logits.shape), gens, torch.float64).to(logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (logits.double() / temperature + gumbel).argmax(-1)


@dataclass
class Scorer(Policy):
    role: ClassVar[str] = "scorer"

    def score(self, logits: Tensor, ctx) -> tuple[Tensor, Tensor]:
        """logits [B, L, V] (float32) -> cand [B, L] ids, conf [B, L]."""
        raise NotImplementedError


@dataclass
class MaxProb(Scorer):
    """Confidence = softmax probability of the candidate (LLaDA `low_confidence`), in float64
    (as the LLaDA reference) or, probs=model, in the model's dtype (see confidence_probs)."""

    name: ClassVar[str] = "maxprob"
    untuned: ClassVar[tuple[str, ...]] = ("probs",)  # a reference's numerics, not a knob
    probs: str = "float64"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.probs not in PROBS:
            raise ValueError(f"probs must be float64 or model, got {self.probs!r}")

    def score(self, logits: Tensor, ctx) -> tuple[Tensor, Tensor]:
        cand = sample_candidates(logits, ctx.temperature, ctx.generators)  # [B, L]
        probs = confidence_probs(logits, self.probs, ctx)
        return cand, probs.gather(-1, cand[..., None]).squeeze(-1)


@dataclass
class RandomConf(Scorer):
    """Confidence drawn uniformly at random (LLaDA `random` remasking)."""

    name: ClassVar[str] = "random"

    def score(self, logits: Tensor, ctx) -> tuple[Tensor, Tensor]:
        cand = sample_candidates(logits, ctx.temperature, ctx.generators)
        conf = row_rand(tuple(cand.shape), ctx.generators).to(logits.device)
        return cand, conf


REGISTRY: dict[str, type[Scorer]] = {c.name: c for c in (MaxProb, RandomConf)}


def repetition(tokens: list[int]) -> float:
    """CadLLM's repetition score of the last committed tokens (in commit order): 1.0 when the
    last 4 are identical, else the largest L/8 (L in 2..4) whose last L tokens repeat the L
    before them; 0 under 8 tokens."""
    if len(tokens) < 8:
        return 0.0
    if len(set(tokens[-4:])) == 1:
        return 1.0
    return max((n / 8 for n in (2, 3, 4) if tokens[-n:] == tokens[-2 * n : -n]), default=0.0)


@dataclass
class TopV(Scorer):
    """CadLLM's V_t: confidence is the candidate's probability renormalised over the top-V
    logits (float64; 0 if outside them), which is >= its full-vocabulary probability. V follows
    the released code: a phase term of generation progress g (0.8*v_max below 0.2, 0.7*v_init
    below 0.7, then 0.9*v_init), widened when recent confidence is low or falling and x3 when
    the last 4 committed tokens repeat, clipped to [v_min, v_max]. adaptive=false: V = v_init."""

    name: ClassVar[str] = "topv"
    bounds: ClassVar[dict[str, str]] = {"v_init": ">= 1", "v_min": ">= 1", "v_max": ">= 1"}
    space: ClassVar[dict] = {
        "v_init": Int(10, 1000, log=True),
        "v_min": Int(1, 100, log=True),
        "v_max": Int("v_min", 4000, log=True),
        "adaptive": Choice((True, False)),
    }
    v_init: int = 100
    v_min: int = 35
    v_max: int = 1000
    adaptive: bool = True
    hist: ConfidenceHistory = field(default_factory=ConfidenceHistory, init=False, repr=False)
    committed: list[int] = field(default_factory=list, init=False, repr=False)
    _head_first: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.v_min > self.v_max:
            raise ValueError(f"need v_min <= v_max, got {self.v_min}, {self.v_max}")

    def reset(self, req) -> None:
        self.hist = ConfidenceHistory()
        self.committed = []
        self.info = {}
        self._head_first = req.block_head_first

    def observe(self, event) -> None:
        self.hist.observe(event, self._head_first)
        if self._head_first and event.step_in_block == 0:
            return  # the Dream code leaves its block-start token out of the list, as the history
        # Commit order: step by step, left to right within a step.
        self.committed = (self.committed + event.cand[0][event.reveal[0]].tolist())[-50:]

    def vocab_size(self, ctx) -> int:
        clip = lambda v: int(min(max(v, self.v_min), self.v_max))  # noqa: E731
        if not self.adaptive:
            return clip(self.v_init)
        L, b = ctx.gen_len, ctx.block
        g = b.start / L + (ctx.step_in_block / b.steps) * (b.length / L)
        phase = 0.8 * self.v_max if g < 0.2 else 0.7 * self.v_init if g < 0.7 else 0.9 * self.v_init
        f = 1.0
        if self.hist.values:
            c5 = self.hist.mean(5)
            f = 1.5 if c5 < 0.3 else 1.2 if c5 < 0.6 else 0.8 if c5 > 0.8 else 1.0
            h = self.hist.values
            if len(h) >= 3 and h[-1] - h[-3] < -0.1:
                f *= 1.3
        r = repetition(self.committed)
        return clip(phase * f * (1 + 2 * r if r > 0.5 else 1.0))

    def score(self, logits: Tensor, ctx) -> tuple[Tensor, Tensor]:
        V = self.vocab_size(ctx)
        cand = sample_candidates(logits, ctx.temperature, ctx.generators)
        top, idx = logits.double().topk(min(V, logits.shape[-1]), dim=-1)  # [B, L, V']
        probs = torch.softmax(top, dim=-1)
        hit = idx == cand[..., None]
        conf = (probs * hit).sum(-1)  # float64; 0 when the candidate is outside the top V
        self.info = {"vocab": V}
        return cand, conf


REGISTRY.update({c.name: c for c in (TopV,)})

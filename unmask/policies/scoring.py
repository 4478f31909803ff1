"""Scorers: logits of the rows a decision needs -> candidate ids and their confidence.

Max-probability (LLaDA's low-confidence remasking) and random confidence here; CadLLM's top-V
renormalised scorer joins this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from unmask.policies.base import Policy


def sample_candidates(logits: Tensor, temperature: float, gen: torch.Generator) -> Tensor:
    """argmax at temperature 0, else Gumbel-max sampling (the LLaDA reference's noise, in
    log space: argmax(l/T + g) = argmax(exp(l) / (-log u)^T))."""
    if temperature <= 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape, generator=gen, dtype=torch.float64, device="cpu").to(logits.device)
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
    """Confidence = softmax probability of the candidate (LLaDA `low_confidence`)."""

    name: ClassVar[str] = "maxprob"

    def score(self, logits: Tensor, ctx) -> tuple[Tensor, Tensor]:
        cand = sample_candidates(logits, ctx.temperature, ctx.generator)  # [B, L]
        probs = torch.softmax(logits, dim=-1)
        return cand, probs.gather(-1, cand[..., None]).squeeze(-1)


@dataclass
class RandomConf(Scorer):
    """Confidence drawn uniformly at random (LLaDA `random` remasking)."""

    name: ClassVar[str] = "random"

    def score(self, logits: Tensor, ctx) -> tuple[Tensor, Tensor]:
        cand = sample_candidates(logits, ctx.temperature, ctx.generator)
        conf = torch.rand(cand.shape, generator=ctx.generator, device="cpu").to(logits.device)
        return cand, conf


REGISTRY: dict[str, type[Scorer]] = {c.name: c for c in (MaxProb, RandomConf)}

"""Reveal rules on hand-written confidence tensors: exact selections, no model involved."""

from __future__ import annotations

import pytest
import torch

from unmask.policies.unmasking import Factor, Quota, Threshold, top_k_mask


class Ctx:
    def __init__(self, n0, steps, i):
        from unmask.policies.blocks import Block

        self.block = Block(0, 8, steps)
        self.step_in_block = i
        self.block_head_first = False


def test_top_k_mask_picks_most_confident_masked_only():
    conf = torch.tensor([[0.9, 0.1, 0.8, 0.7], [0.2, 0.3, 0.4, 0.5]])
    masked = torch.tensor([[False, True, True, True], [True, True, True, True]])
    out = top_k_mask(conf, masked, torch.tensor([2, 1]))
    assert out.tolist() == [[False, False, True, True], [False, False, False, True]]


def test_quota_spreads_masks_like_llada():
    # 5 masks over 3 steps: 2, 2, 1 (the first n mod S steps take one extra).
    conf = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.2]])
    masked = torch.ones(1, 5, dtype=torch.bool)
    quota, got = Quota(), []
    for i in range(3):
        out = quota.select(conf, masked, Ctx([5], 3, i))
        got.append(int(out.sum()))
        masked = masked & ~out
    assert got == [2, 2, 1] and not masked.any()
    quota.select(conf, torch.ones(1, 5, dtype=torch.bool), Ctx([5], 3, 0))  # the block opens
    last = quota.select(conf, torch.ones(1, 5, dtype=torch.bool), Ctx([5], 3, 2))
    assert last.sum().item() == 5  # the budget is spent: whatever is left goes


def test_threshold_reveals_at_or_above_tau_plus_top1():
    conf = torch.tensor([[0.95, 0.90, 0.89, 0.2], [0.5, 0.6, 0.1, 0.3]])
    masked = torch.tensor([[True, True, True, True], [True, False, True, True]])
    out = Threshold(tau=0.9).select(conf, masked, Ctx([4, 3], 4, 1))
    assert out.tolist() == [[True, True, False, False], [True, False, False, False]]


def test_factor_rule_thresholds_by_rank():
    # Ranked: 0.99 (n=1, always), 0.70 (n=2: needs >= 1-1/3=0.667), 0.70 (n=3: needs >= 0.75) stop.
    conf = torch.tensor([[0.70, 0.99, 0.70, 0.10, 0.05]])
    masked = torch.ones(1, 5, dtype=torch.bool)
    out = Factor(factor=1.0).select(conf, masked, Ctx([4], 4, 1))
    assert out.sum().item() == 2 and out[0, 1] and (out[0, 0] or out[0, 2])


def test_factor_rule_failing_only_at_the_last_position_reveals_all():
    # The authors' loop leaves its index on the last position when only that one fails.
    conf = torch.tensor([[0.99, 0.98, 0.10]])
    masked = torch.ones(1, 3, dtype=torch.bool)
    assert Factor(factor=1.0).select(conf, masked, Ctx([4], 4, 1)).all()


def test_factor_rule_ignores_revealed_positions():
    conf = torch.tensor([[0.99, 0.2, 0.98, 0.97]])
    masked = torch.tensor([[False, True, True, True]])
    out = Factor(factor=1.0).select(conf, masked, Ctx([4], 4, 1))
    assert not out[0, 0]


def test_factor_thresholds_are_float64_as_the_reference():
    # Rank 4's bar is 1 - 1/5 = 0.8; float32 rounds it up to 0.80000001, above a confidence of
    # exactly 0.8 (float64), which the reference's float64 bar lets through.
    conf = torch.tensor([[0.99, 0.95, 0.9, 0.8, 0.01, 0.005]], dtype=torch.float64)
    masked = torch.ones_like(conf, dtype=torch.bool)
    reveal = Factor(factor=1.0, dream_first=False).select(conf, masked, None)
    assert reveal.tolist() == [[True, True, True, True, False, False]]


def test_confidence_in_the_model_dtype_ties_near_one_as_the_references_do():
    """scorer=maxprob:probs=model takes the softmax in the model's dtype (dLLM-Cache's and
    Dynamic-dLLM's code): in bfloat16 two confidences near 1.0 round to the same value and the
    tie goes to the first position, where float64 (the default) ranks them."""
    from types import SimpleNamespace

    from unmask.policies.scoring import MaxProb
    from unmask.recipe import parse

    logits = torch.full((1, 2, 8), -4.0)
    logits[0, 0, 3], logits[0, 1, 5] = 6.0, 6.5  # p ~ 0.9991 and ~ 0.9994
    masked = torch.ones(1, 2, dtype=torch.bool)
    k1 = torch.ones(1, dtype=torch.long)
    for probs, dtype, first in (("float64", torch.float64, 1), ("model", torch.bfloat16, 0)):
        ctx = SimpleNamespace(temperature=0.0, generators=None, model_dtype=torch.bfloat16)
        cand, conf = MaxProb(probs=probs).score(logits, ctx)
        assert cand.tolist() == [[3, 5]] and conf.dtype == dtype
        assert top_k_mask(conf, masked, k1)[0].nonzero().item() == first
    # float32 models: the model dtype is float32
    ctx = SimpleNamespace(temperature=0.0, generators=None, model_dtype=torch.float32)
    assert MaxProb(probs="model").score(logits, ctx)[1].dtype == torch.float32
    assert parse("dllm-cache+scorer=maxprob:probs=model").scorer.probs == "model"
    assert parse("dynamic-dllm+unmask=apd:probs=model").unmask.probs == "model"
    with pytest.raises(Exception, match="float64 or model"):
        parse("vanilla+scorer=maxprob:probs=half")

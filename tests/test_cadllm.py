"""CadLLM's controllers pinned on hand-written confidence histories (exact values from the
formulas of the released code, METHODS.md 2.3), and the ablation presets switching each off."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.generate import generate, stream_generate
from unmask.models.load import load as ckpt_load
from unmask.policies.base import ConfidenceHistory
from unmask.policies.blocks import AdaptiveBlocks, Block
from unmask.policies.scoring import TopV, repetition
from unmask.policies.unmasking import CadThreshold
from unmask.recipe import parse


def blocks_with(history, **kw) -> AdaptiveBlocks:
    b = AdaptiveBlocks(**kw)
    b.reset(SimpleNamespace(block_head_first=False, batch=1))
    b.hist.values = list(history)
    return b


@pytest.mark.parametrize(
    "c,length,steps",
    [(0.1, 10, 34), (0.3, 22, 64), (0.5, 34, 80), (0.7, 45, 80), (0.9, 57, 71), (0.99, 63, 63)],
)
def test_block_size_and_steps_follow_the_last_two_confidences(c, length, steps):
    # METHODS.md 2.3's worked table for the LLaDA GSM8K config (B 24 in [4, 64], S 24..90). The
    # code takes the block's mean in float32, which puts 0.7 and 0.9 a hair below themselves:
    # B = 4 + int(60 * 0.69999999) = 45, not the table's exact-arithmetic 46 (0.9: 57, not 58).
    b = blocks_with([0.2, c, c])  # only the last two count
    assert b.next_block(0, SimpleNamespace(gen_len=256)) == Block(0, length, steps)


def test_first_block_and_switches_use_the_initial_values():
    ctx = SimpleNamespace(gen_len=256)
    assert blocks_with([]).next_block(0, ctx) == Block(0, 24, 24)
    assert blocks_with([0.9, 0.9], adaptive_len=False).next_block(0, ctx) == Block(0, 24, 30)
    # Steps off: S stays at init_steps, not rescaled by B.
    assert blocks_with([0.5, 0.5], adaptive_steps=False).next_block(0, ctx) == Block(0, 34, 24)
    # The last block is truncated to what remains.
    assert blocks_with([0.9, 0.9]).next_block(240, ctx).end == 256


def test_history_skips_a_head_first_block_start_and_empty_steps():
    ev = SimpleNamespace(
        step_in_block=0,
        masked=torch.tensor([[True, False, True]]),
        conf=torch.tensor([[0.2, 0.9, 0.6]]),
    )
    h = ConfidenceHistory()
    h.observe(ev, head_first=False)
    h.observe(ev, head_first=True)
    ev.step_in_block, ev.masked = 1, torch.zeros(1, 3, dtype=torch.bool)
    h.observe(ev, head_first=False)
    assert h.values == [pytest.approx(0.4)]


def test_every_block_is_clamped_into_its_range_the_first_too():
    # calculate_adaptive_block_size clamps B = initial_block_length as it clamps the adaptive B
    ctx = SimpleNamespace(gen_len=256)
    assert blocks_with([], init_len=2).next_block(0, ctx).length == 4
    assert blocks_with([], init_len=100).next_block(0, ctx).length == 64
    assert blocks_with([0.9], init_len=100, adaptive_len=False).next_block(0, ctx).length == 64


def vocab(g_block_start, hist=(), committed=(), step=0, steps=10, length=16, gen_len=160):
    s = TopV()
    s.reset(SimpleNamespace(block_head_first=False, batch=1))
    s.hist.values, s.committed = list(hist), list(committed)
    ctx = SimpleNamespace(
        gen_len=gen_len,
        step_in_block=step,
        block=Block(int(g_block_start * gen_len), int(g_block_start * gen_len) + length, steps),
    )
    return s.vocab_size(ctx)


def test_vocab_phase_confidence_trend_and_repetition_factors():
    assert vocab(0.0) == 800  # early phase: 0.8 * v_max
    assert vocab(0.5) == 70  # middle: 0.7 * v_init
    assert vocab(0.8) == 90  # late: 0.9 * v_init
    assert vocab(0.5, hist=[0.2]) == 105  # c5 < 0.3: x1.5
    assert vocab(0.5, hist=[0.5]) == 84  # c5 < 0.6: x1.2
    assert vocab(0.8, hist=[0.9]) == 72  # c5 > 0.8: x0.8
    assert vocab(0.5, hist=[0.75, 0.7, 0.6]) == 91  # falling trend: x1.3 on top of 1.0
    assert vocab(0.5, hist=[0.95, 0.9, 0.7]) == 72  # c5 = 0.85 -> 0.8 x 1.3 = 1.04 -> 72.8
    assert vocab(0.5, committed=[1, 2, 3, 4, 5, 7, 7, 7, 7]) == 210  # 4 identical: x3
    assert vocab(0.5, hist=[0.9] * 5, committed=[3] * 8) == 168  # 70 x 0.8 x 3
    assert vocab(0.0, hist=[0.1]) == 1000  # clipped at v_max
    # Progress inside the block moves g: 0.15 + (5/10) * (16/160) = 0.2 -> middle phase.
    assert vocab(0.15, step=5) == 70


def test_repetition_score():
    assert repetition([1, 2, 3, 4, 5, 6, 7]) == 0.0  # under 8 tokens
    assert repetition([1, 2, 3, 4, 9, 9, 9, 9]) == 1.0
    assert repetition([1, 2, 3, 4, 5, 6, 5, 6]) == 0.25
    assert repetition([1, 2, 3, 4, 5, 6, 7, 8]) == 0.0
    assert repetition([5, 6, 7, 8, 1, 2, 3, 4, 1, 2, 3, 4]) == 0.5


def test_topv_confidence_is_renormalised_over_the_top_v():
    s = TopV(v_init=2, v_min=1, v_max=1000, adaptive=False)
    s.reset(SimpleNamespace(block_head_first=False, batch=1))
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]]))
    ctx = SimpleNamespace(temperature=0.0, generators=[torch.Generator()])
    cand, conf = s.score(logits, ctx)
    assert cand.item() == 0
    assert conf.item() == pytest.approx(0.5 / 0.8)
    cand, conf = s.score(logits, SimpleNamespace(temperature=0.0, generators=None))
    assert conf.item() >= 0.5  # never below the full-vocabulary probability


def test_tau_sawtooth_restarts_every_block():
    rule = CadThreshold()
    tau = lambda i, steps=10: rule.tau(  # noqa: E731
        SimpleNamespace(block=Block(32, 48, steps), step_in_block=i, gen_len=64)
    )
    assert [round(tau(i), 4) for i in (0, 5, 10, 15)] == [0.85, 0.625, 0.4, 0.4]
    glob = CadThreshold(global_decay=True)
    ctx = SimpleNamespace(block=Block(32, 48, 10), step_in_block=7, gen_len=64)
    assert glob.tau(ctx) == pytest.approx(0.85 * 0.5 + 0.40 * 0.5)


def test_controller_values_show_in_step_events(tiny_loaded):
    prompt = "Question: Tom has 3 apples. He buys 2 more. How many apples does Tom have?"
    events = list(stream_generate(tiny_loaded, prompt, parse("cadllm"), gen_len=48))
    info = events[-1].info
    for key in ("block_len", "block_steps", "vocab", "confidence"):
        assert key in info
    assert events[0].info["block_len"] == 24


@pytest.mark.parametrize(
    "preset",
    [
        "cadllm",
        "cadllm-dream",
        "cadllm-no-block",
        "cadllm-no-steps",
        "cadllm-no-vocab",
        "cadllm-no-threshold",
    ],
)
def test_presets_decode_to_the_end(tiny_loaded, preset):
    out = generate(tiny_loaded, "Reverse the list: 1 2 3", parse(preset), gen_len=40)[0]
    assert tiny_loaded.args.mask_id not in out.ids and len(out.ids) == 40


def test_overrides_merge_into_the_preset_policy():
    r = parse("cadllm-dream+blocks=cadllm:adaptive_len=false")
    assert (r.blocks.min_len, r.blocks.max_len, r.blocks.adaptive_len) == (8, 48, False)


def test_controller_values_reach_json_and_the_confidence_plot(tiny, tmp_path, capsys):
    import json

    from unmask import cli
    from unmask.plots import controller_series

    argv = ["generate", "--model", str(tiny[0]), "--gen-len", "32", "--recipe", "cadllm"]
    png = tmp_path / "conf.png"
    assert cli.main([*argv, "--json", "--plot-conf", str(png), "Reverse the list: 1 2 3"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    steps = record["steps"]
    assert len(steps) == record["metrics"]["nfe"]
    assert steps[0]["info"]["block_len"] == 24
    # tau_t follows the sawtooth 0.85 -> 0.40 (None on Dream's block-start step, its own rule)
    taus = [s["info"]["tau"] for s in steps if s["info"]["tau"] is not None]
    assert taus and all(0.4 <= t <= 0.85 for t in taus)
    assert sum(len(s["revealed"]) for s in steps) == 32  # every position revealed exactly once
    assert png.stat().st_size > 0
    lm = ckpt_load(tiny[0])
    events = list(stream_generate(lm, "Reverse the list: 1 2 3", parse("cadllm"), gen_len=32))
    series = controller_series(events)
    assert {"tau", "block_len", "block_steps", "vocab"} <= set(series)
    assert series["block_len"][0] == 24
    vanilla = list(stream_generate(lm, "Reverse the list: 1 2 3", parse("vanilla"), gen_len=8))
    assert controller_series(vanilla) == {}

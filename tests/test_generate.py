"""Tests for unmask/generate.py: the engine against the slow reference on tiny random models, and
its invariants and metrics on a scripted-logits mock model (no real compute)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from conftest import make_checkpoint
from torch import Tensor

from unmask.generate import (
    Output,
    StepEvent,
    encode_prompts,
    generate,
    reference_generate,
    stream_generate,
)
from unmask.models import load as ckpt
from unmask.models.layers import ModelArgs
from unmask.policies.refresh import FeatureRefresh, FullLayeredPlan
from unmask.policies.unmasking import Quota, UnmaskRule
from unmask.recipe import Recipe, parse
from unmask.tokenizer import Tokenizer

PROMPTS = ["12+7=", "reverse: abcdefgh please", "3*4+5="]


def decode(lm, prompts, recipe: Recipe, gen_len: int, **kw) -> tuple[list[StepEvent], list[Output]]:
    """Run the stream to its end; a step that reveals nothing would loop forever, so cap it."""
    events = []
    rows = 1 if isinstance(prompts, str) else len(prompts)  # one event per row and step
    for event in stream_generate(lm, prompts, recipe, gen_len=gen_len, **kw):
        events.append(event)
        assert len(events) <= gen_len * rows, f"no end after {gen_len} steps: one revealed nothing"
        if event.done:
            return events, event.outputs
    raise AssertionError("stream ended without a final event")


# --- tiny random models: vanilla == the slow reference; layered refresh == no cache ------------


@pytest.mark.parametrize(
    "gen_len, block_len, steps",
    [(16, 8, None), (12, 5, None), (20, 8, 12), (9, 16, 4)],
)
def test_vanilla_matches_reference(tiny_loaded, gen_len, block_len, steps):
    lm = tiny_loaded
    spec = "vanilla" if steps is None else f"vanilla+blocks=fixed:len={block_len},steps={steps}"
    for prompt in PROMPTS:
        ids = encode_prompts(lm, [prompt], chat=True)[0]
        want = reference_generate(lm.model, ids, gen_len, block_len, steps or gen_len)
        _, out = decode(lm, prompt, parse(spec), gen_len, block_len=block_len)
        assert out[0].ids == want, prompt


@dataclass
class RefreshAll(FeatureRefresh):
    """Every row of every layer through the per-layer (feature-caching) path, every step."""

    name: ClassVar[str] = "refresh-all"

    def plan(self, ctx) -> FullLayeredPlan:
        return FullLayeredPlan()


def test_layered_refresh_everything_matches_no_cache(tiny_loaded):
    lm = tiny_loaded
    layered = Recipe("refresh-all", refresh=RefreshAll())
    for prompts in (PROMPTS[0], PROMPTS[1], PROMPTS[:2]):
        _, want = decode(lm, prompts, parse("vanilla"), 16, block_len=8)
        _, got = decode(lm, prompts, layered, 16, block_len=8)
        assert [o.ids for o in got] == [o.ids for o in want]
        assert [o.metrics.rows for o in got] == [o.metrics.rows for o in want]


def test_left_padding_matches_decoding_alone(tiny_loaded):
    lm = tiny_loaded
    lens = [len(i) for i in encode_prompts(lm, PROMPTS, chat=True)]
    assert len(set(lens)) == len(lens)
    _, batch = decode(lm, PROMPTS, parse("vanilla"), 16, block_len=8)
    for prompt, out in zip(PROMPTS, batch, strict=True):
        _, alone = decode(lm, prompt, parse("vanilla"), 16, block_len=8)
        assert out.ids == alone[0].ids
        assert out.text == alone[0].text
        assert out.metrics.nfe == alone[0].metrics.nfe == 16


# --- a scripted-logits mock model --------------------------------------------------------------

Script = Callable[[int, Tensor], Tensor]  # (step, canvas rows [B, M]) -> logits [B, M, V]


class ScriptedModel:
    """Stands in for Transformer: `run` returns scripted logits as the hidden states (so
    `compute_logits` is the identity) and scripted row counts; it records the rows asked for."""

    def __init__(self, args: ModelArgs, script: Script):
        self.args = args
        self.script = script
        self.weight = torch.zeros(1)
        self.out_rows: list[Tensor] = []

    def parameters(self):
        yield self.weight

    def run(self, canvas, pos, key_mask, plan, cache, warm=None) -> tuple[Tensor, Tensor]:
        step = len(self.out_rows)
        out_rows = plan.out_rows
        self.out_rows.append(out_rows.clone())
        B, n = canvas.shape[0], self.args.n_layers
        rows = step + 1 + torch.arange(B)[:, None] * 10 + torch.arange(n)  # [B, n_layers]
        return self.script(step, out_rows), rows

    def compute_logits(self, hidden: Tensor) -> Tensor:
        return hidden


@dataclass
class FakeLoaded:
    model: ScriptedModel
    tokenizer: Tokenizer
    args: ModelArgs
    stop_ids: tuple[int, ...]


@pytest.fixture(scope="module")
def real(ckpt_root):
    return ckpt.load(make_checkpoint(ckpt_root, "llada")[0])


def noise(a: ModelArgs, ban: tuple[int, ...]) -> Script:
    """Pseudo-random logits, a pure function of (step, canvas position); ids in `ban` (MASK and
    the stop ids, unless a test scripts them) are never candidates."""

    def script(step: int, rows: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(1000 + step)
        table = torch.randn(256, a.vocab_size, generator=g) * 3  # [T_max, V]
        table[:, list(ban)] = float("-inf")
        return table[rows]  # [B, M, V]

    return script


def mock(real, script: Script | None = None, **arg_changes) -> FakeLoaded:
    a = dataclasses.replace(real.args, **arg_changes)
    script = script or noise(a, (a.mask_id, *real.stop_ids))
    return FakeLoaded(ScriptedModel(a, script), real.tokenizer, a, real.stop_ids)


@dataclass
class Never(UnmaskRule):
    name: ClassVar[str] = "never"

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        return torch.zeros_like(masked)


@dataclass
class Everything(UnmaskRule):
    name: ClassVar[str] = "everything"

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        return torch.ones_like(masked)


@dataclass
class Coin(UnmaskRule):
    """A random subset, often empty, differing by row: rows finish blocks at different steps."""

    name: ClassVar[str] = "coin"

    def select(self, conf: Tensor, masked: Tensor, ctx) -> Tensor:
        return torch.rand(masked.shape, generator=ctx.generators[0]) < 0.2


def check_events(events: list[StepEvent], outputs: list[Output], G: int, mask_id: int) -> None:
    """Replay each row's events on an all-MASK canvas; the engine's final ids must be that replay.
    A row has one event per step while it has masks, numbered by its own steps and forwards."""
    B = len(outputs)
    canvas = torch.full((B, G), mask_id)  # [B, G]
    steps = [0] * B
    rows = [0] * B
    for n, ev in enumerate(events, 1):
        b = ev.batch_index
        assert (ev.step, ev.nfe, ev.done) == (steps[b], steps[b] + 1, n == len(events))
        steps[b] += 1
        blk = slice(ev.block.start, ev.block.end)
        assert torch.equal(ev.masked[0], canvas[b, blk] == mask_id)  # nothing re-masked
        assert ev.masked.any()  # events only while the row has masks in its block
        assert not (ev.reveal & ~ev.masked).any()  # only masked positions revealed
        assert ev.reveal.any()  # >= 1 per step
        assert not (ev.cand[ev.reveal] == mask_id).any()
        canvas[b, blk] = torch.where(ev.reveal[0], ev.cand[0], canvas[b, blk])
        rows[b] += int(ev.rows.sum())
    assert max(steps) <= G
    ids = torch.tensor([o.ids for o in outputs])
    assert torch.equal(ids, canvas)
    assert not (ids == mask_id).any()
    assert [o.metrics.nfe for o in outputs] == steps
    assert [o.metrics.rows for o in outputs] == rows


RULES = {"quota": Quota, "never": Never, "everything": Everything, "coin": Coin}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("prompts", [PROMPTS[0], PROMPTS[:2]], ids=["one", "two"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_invariants(real, rule, prompts, temperature):
    lm = mock(real)
    G = 20
    recipe = Recipe(rule, unmask=RULES[rule](), temperature=temperature, seed=3)
    events, outputs = decode(lm, prompts, recipe, G, block_len=8)
    check_events(events, outputs, G, lm.args.mask_id)
    first = [ev for ev in events if ev.batch_index == 0]
    if rule in ("quota", "never"):  # one reveal per step: exactly gen_len steps
        assert len(first) == G and len(events) == G * len(outputs)
        assert all(int(ev.reveal.sum()) == 1 for ev in events)
    if rule == "everything":  # one step per block: 8 + 8 + 4
        assert [ev.block.length for ev in first] == [8, 8, 4]
    if isinstance(prompts, str):
        assert outputs[0].metrics.nfe == len(events)


def test_quota_spreads_a_block_over_its_steps(real):
    # gen 12, blocks of 8 and 4, 5 steps: 3 for the first block (8 = 3+3+2), 2 for the second.
    events, outputs = decode(
        mock(real), PROMPTS[0], parse("vanilla+blocks=fixed:len=8,steps=5"), 12
    )
    assert [int(ev.reveal.sum()) for ev in events] == [3, 3, 2, 2, 2]
    assert [ev.step_in_block for ev in events] == [0, 1, 2, 0, 1]
    check_events(events, outputs, 12, real.args.mask_id)


def test_seeds(real):
    def ids(temperature: float, seed: int) -> list[int]:
        recipe = Recipe("t", temperature=temperature, seed=seed)
        return decode(mock(real), PROMPTS[:2], recipe, 16, block_len=8)[1][1].ids

    assert ids(1.0, 0) == ids(1.0, 0)
    assert ids(1.0, 0) != ids(1.0, 1)
    assert ids(0.0, 0) == ids(0.0, 1)


@pytest.mark.parametrize("shift", [False, True])
def test_decision_rows_follow_the_logit_shift(real, shift):
    lm = mock(real, logit_shift=shift)
    P = len(encode_prompts(lm, [PROMPTS[0]], chat=True)[0])
    events, _ = decode(lm, PROMPTS[0], parse("vanilla"), 12, block_len=8)
    for ev, rows in zip(events, lm.model.out_rows, strict=True):
        lo = P + ev.block.start - shift  # Dream reads position p at p-1
        assert rows.tolist() == [list(range(lo, lo + ev.block.length))]


@pytest.mark.parametrize("head_first", [False, True])
@pytest.mark.parametrize("shift", [False, True])
def test_a_block_opens_with_its_head_as_the_model_arg_says(real, shift, head_first):
    """Dream's block-start quirk (reveal only the first position) follows the model's
    `block_head_first`, which the family file sets, not the logit shift."""
    lm = mock(real, logit_shift=shift, block_head_first=head_first)
    recipe = parse("vanilla+unmask=threshold:tau=0")  # tau 0: every masked position at once
    events, _ = decode(lm, PROMPTS[0], recipe, 16, block_len=8)
    starts = [ev for ev in events if ev.step_in_block == 0]
    assert len(starts) == 2
    for ev in starts:
        revealed = ev.reveal[0].nonzero().flatten().tolist()
        assert revealed == ([0] if head_first else list(range(8)))


def test_mask_token_is_never_revealed(real):
    """A model whose favourite token is MASK must still finish, with no MASK in the output."""
    a = real.args

    def favours_mask(step: int, rows: Tensor) -> Tensor:
        logits = noise(a, real.stop_ids)(step, rows)
        logits[..., a.mask_id] = 50.0
        return logits

    events, outputs = decode(mock(real, favours_mask), PROMPTS[0], parse("vanilla"), 8)
    check_events(events, outputs, 8, a.mask_id)


@pytest.mark.parametrize(
    "eos_at, eot_at, end",
    [(5, None, 5), (9, 3, 3), (0, None, 0), (None, None, None), (None, 15, 15)],
)
def test_metrics(real, eos_at, eot_at, end):
    a, eot, G = real.args, real.eot_id, 16
    P = len(encode_prompts(real, [PROMPTS[0]], chat=True)[0])

    def script(step: int, rows: Tensor) -> Tensor:
        logits = noise(a, (a.mask_id, a.eos_id, eot))(step, rows)
        for tok, at in ((a.eos_id, eos_at), (eot, eot_at)):
            if at is not None:
                logits[rows == P + at, tok] = 100.0
        return logits

    events, outputs = decode(mock(real, script), PROMPTS[0], parse("vanilla"), G, block_len=8)
    out = outputs[0]
    m = out.metrics
    answer = G if end is None else end + 1  # up to and including the first EOS/EOT
    assert next((i for i, t in enumerate(out.ids) if t in (a.eos_id, eot)), None) == end
    assert (m.prompt_tokens, m.answer_tokens, m.all_tokens) == (P, answer, G)
    assert (m.nfe, m.n_layers) == (G, a.n_layers)
    assert m.ar_floor == (P + answer) * a.n_layers
    assert m.rows == sum(int(ev.rows.sum()) for ev in events)
    assert m.rows_over_ar_floor == m.rows / m.ar_floor
    assert m.wall_s > 0 and m.answer_tokens_per_s == answer / m.wall_s
    assert m.all_tokens_per_s == G / m.wall_s
    text = real.tokenizer.decode(out.ids[:end], skip_special_tokens=True).strip()
    assert out.text == text
    d = m.to_dict()
    assert (d["ar_floor"], d["answer_tokens"], d["nfe"]) == (m.ar_floor, answer, G)


def test_eos_exit_keeps_the_answer(real):
    a, G = real.args, 16
    P = len(encode_prompts(real, [PROMPTS[0]], chat=True)[0])

    def script(step: int, rows: Tensor) -> Tensor:
        logits = noise(a, (a.mask_id, *real.stop_ids))(step, rows)
        logits[rows == P + 5, a.eos_id] = 100.0
        return logits

    _, full = decode(mock(real, script), PROMPTS[0], parse("vanilla"), G, block_len=8)
    _, cut = decode(mock(real, script), PROMPTS[0], parse("vanilla+eos_exit=true"), G, block_len=8)
    assert cut[0].text == full[0].text
    assert cut[0].ids[:6] == full[0].ids[:6]
    # after the stop: what was revealed before the exit, and EOS where masks were left
    assert all(t in (f, a.eos_id) for t, f in zip(cut[0].ids[6:], full[0].ids[6:], strict=True))
    assert cut[0].metrics.answer_tokens == full[0].metrics.answer_tokens == 6
    assert cut[0].metrics.nfe < full[0].metrics.nfe == G


def test_generate_drains_the_stream(real):
    lm = mock(real)
    recipe = parse("vanilla+gen_len=12+temperature=0.5+seed=7")
    out = generate(lm, PROMPTS[:2], recipe, gen_len=99)  # the recipe's gen_len wins
    _, want = decode(mock(real), PROMPTS[:2], recipe, 12)
    assert [o.ids for o in out] == [o.ids for o in want]
    assert [len(o.ids) for o in out] == [12, 12]


@pytest.mark.parametrize(
    "prompt, kw, error",
    [
        ("  ", {}, "empty prompt"),
        ("12+7=", {"gen_len": 1024}, "exceeds the model's 1024"),
        ("12+7=", {"gen_len": -1}, "gen_len must be > 0"),
        ("12+7=", {"gen_len": 0}, "gen_len must be > 0"),
        ("12+7=", {"gen_len": 8, "block_len": -4}, "block"),
    ],
)
def test_bad_requests(real, prompt, kw, error):
    with pytest.raises(ValueError, match=error):
        generate(mock(real), prompt, parse("vanilla"), **kw)

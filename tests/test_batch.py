"""Per-row state: every preset decodes a batch of 8 prompts exactly as it decodes each prompt
alone (tokens, NFE and cells), at temperature 0 and at temperature 1 with a seed. And the step
contract: a new per-layer refresh policy is a class in policies' terms only (here it lives in
this test), planned per row from the signals the cache side serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import ClassVar

import pytest
import torch

from unmask.generate import generate, stream_generate
from unmask.models.load import load
from unmask.policies import refresh
from unmask.policies.refresh import FeatureRefresh, scheduled_rows
from unmask.recipe import PRESETS, parse
from unmask.step import LayerRows
from unmask.tasks import get_task

PROMPTS = [s.prompt for s in get_task("arith", shots=0).samples("test", 8)]


@cache
def model(name: str):
    return load(name)


def outcome(outputs) -> list[tuple[list[int], int, int, int]]:
    return [(o.ids, o.metrics.nfe, o.metrics.rows, o.metrics.v_only_rows) for o in outputs]


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
@pytest.mark.parametrize("sampling", ["temperature=0", "temperature=1+seed=11"])
def test_batch_of_8_decodes_as_one_by_one_for_every_preset(name, sampling):
    lm = model(name)
    assert len({len(lm.tokenizer.encode(p)) for p in PROMPTS}) > 1  # the batch is left-padded
    for preset in PRESETS:
        recipe = parse(f"{preset}+{sampling}")
        kw = {"gen_len": 32, "block_len": 16}
        together = outcome(generate(lm, PROMPTS, recipe, **kw))
        alone = [x for p in PROMPTS for x in outcome(generate(lm, p, recipe, **kw))]
        assert together == alone, preset


@dataclass
class EveryRowByMask(FeatureRefresh):
    """Every row at every layer, but spelled as explicit masks with their bound: the per-layer
    gather path, which must then equal no-cache decoding exactly."""

    name: ClassVar[str] = "test-every-row"

    def plan(self, ctx):
        return _Replay(
            lambda layer, signals: LayerRows(torch.ones_like(ctx.masked), ctx.canvas.shape[1])
        )


@dataclass
class MovedRows(FeatureRefresh):
    """A per-layer policy built on the served signals: each layer recomputes the `n` generated
    rows whose V moved most, plus the current block; the rest reuse cached contributions."""

    name: ClassVar[str] = "test-moved"
    n: int = 3
    picked: list[int] = field(default_factory=list, init=False, repr=False)

    def plan(self, ctx):
        def rows(layer, signals):
            mask = scheduled_rows(ctx, False, False)
            mask[:, ctx.cols(ctx.block)] = True
            if signals.warm:
                top = signals.v_moved().topk(self.n, dim=-1).indices
                mask[:, ctx.gen_start :].scatter_(1, top, True)
            self.picked.append(int(mask.sum()))
            return LayerRows(mask, None, gen_only=True, fresh_v=signals.warm)

        return _Replay(rows)


@dataclass
class _Replay:
    pick: object

    def fixed_rows(self):
        return None

    def layer_rows(self, layer, signals):
        return self.pick(layer, signals)


@pytest.fixture
def test_policies(monkeypatch):
    for cls in (EveryRowByMask, MovedRows):
        monkeypatch.setitem(refresh.REGISTRY, cls.name, cls)


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_a_policy_defined_outside_the_package_plugs_in(name, test_policies):
    lm = model(name)
    kw = {"gen_len": 24, "block_len": 8}
    want = generate(lm, PROMPTS[:3], parse("vanilla"), **kw)
    got = generate(lm, PROMPTS[:3], parse("vanilla+refresh=test-every-row"), **kw)
    assert [o.ids for o in got] == [o.ids for o in want]
    assert [o.metrics.rows for o in got] == [o.metrics.rows for o in want]

    recipe = parse("vanilla+refresh=test-moved:n=3")
    events = list(stream_generate(lm, PROMPTS[0], recipe, **kw))
    out = events[-1].outputs[0]
    assert lm.args.mask_id not in out.ids and out.metrics.nfe == len(events) == 24
    L, P = lm.args.n_layers, out.metrics.prompt_tokens
    # the cold step recomputes every row; then each layer its block (8) and the 3 moved rows
    # (fewer where they fall inside the block), with the V of all 24 generated rows projected
    assert int(events[0].rows.sum()) == L * (P + 24)
    assert all(8 * L <= int(e.rows.sum()) <= 11 * L for e in events[1:])
    assert out.metrics.v_only_rows > 0
    together = generate(lm, PROMPTS[:2], recipe, **kw)
    alone = [generate(lm, p, recipe, **kw)[0] for p in PROMPTS[:2]]
    assert outcome(together) == outcome(alone)

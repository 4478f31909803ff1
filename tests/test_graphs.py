"""Replayed steps (models/graphs.py): a one-row request whose fixed-rows forwards go through the
static buffers and the by-index path decodes exactly as eager decoding, for every preset on both
shipped models. On this CPU "replay" re-runs the recorded step (no capture); the CUDA capture
itself is checked by scripts/device/9-graphs.sh on a GPU."""

from __future__ import annotations

import dataclasses

import pytest
from test_batch import PROMPTS as BATCH_PROMPTS
from test_batch import model, outcome

import unmask.engine
from unmask.generate import generate
from unmask.recipe import PRESETS, parse

PROMPTS = BATCH_PROMPTS[:2]


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_replayed_steps_decode_as_eager_for_every_preset(name, monkeypatch):
    eager = model(name)
    replayed = dataclasses.replace(eager, graphs=True)
    made = []

    class Recorded(unmask.engine.StepGraphs):
        def __init__(self, capture: bool):
            super().__init__(capture)
            made.append(self)

    monkeypatch.setattr(unmask.engine, "StepGraphs", Recorded)
    for preset in PRESETS:
        recipe = parse(preset + "+gen_len=64")
        for prompt in PROMPTS:
            before = len(made)
            want = outcome(generate(eager, prompt, recipe))
            assert len(made) == before  # eager decoding keeps no graphs
            assert outcome(generate(replayed, prompt, recipe)) == want, (preset, prompt)
        # fixed-rows presets record their shapes, the per-layer ones none; those whose shapes
        # repeat replay (CadLLM's blocks change length at every block, so on this over-confident
        # model its shapes rarely repeat)
        fixed = preset.startswith(("vanilla", "fast-dllm", "cadllm", "dkv"))
        assert len(made) == len(PROMPTS)
        assert all(bool(g.entries) == fixed for g in made), preset
        if preset.startswith(("vanilla", "fast-dllm", "dkv")):
            assert sum(g.replays for g in made) > 0, preset
        made.clear()


def test_a_batch_is_not_replayed(monkeypatch):
    lm = dataclasses.replace(model("tiny-llada"), graphs=True)
    made = []
    monkeypatch.setattr(unmask.engine, "StepGraphs", lambda capture: made.append(capture) or None)
    generate(lm, PROMPTS[:2], parse("fast-dllm"), gen_len=16)
    assert made == []

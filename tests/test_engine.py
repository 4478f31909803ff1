"""The engine under continuous batching: rows with different recipes, prompt lengths and gen
lengths join while others decode, and leave when done or dropped; each decodes exactly as it
does alone (tokens, NFE, cells), and a dropped row changes nobody else."""

from __future__ import annotations

from functools import cache

import pytest

from unmask.engine import Engine
from unmask.generate import encode_prompts, generate
from unmask.models.load import load
from unmask.recipe import parse
from unmask.tasks import get_task

PROMPTS = [s.prompt for s in get_task("arith", shots=0).samples("test", 6)]
# (prompt, recipe, gen_len, the step at which it joins)
PLAN = [
    (0, "fast-dllm", 32, 0),
    (1, "cadllm", 48, 0),
    (2, "dynamic-dllm+temperature=1+seed=4", 24, 2),
    (3, "dllm-cache", 40, 3),
    (4, "vanilla+blocks=fixed:len=8", 16, 5),
    (5, "dkv-cache+unmask=threshold:tau=0.7", 32, 5),
]


@cache
def model(name: str):
    return load(name)


def alone(lm, prompt: str, spec: str, gen_len: int):
    o = generate(lm, prompt, parse(spec), gen_len=gen_len, block_len=16)[0]
    return o.ids, o.metrics.nfe, o.metrics.rows


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_rows_joining_and_leaving_decode_as_alone(name):
    lm = model(name)
    engine = Engine(lm)
    rows, step = {}, 0
    while len(rows) < len(PLAN) or engine.live:
        for i, spec, gen_len, at in PLAN:
            if at == step:
                ids = encode_prompts(lm, [PROMPTS[i]], chat=True)[0]
                rows[i] = engine.add(ids, parse(spec), gen_len, 16)
        engine.step()
        for r in list(engine.rows):
            if r.finished:
                engine.drop(r)  # leaves: the next step lays the batch out again
        step += 1
        assert step < 400
    for i, spec, gen_len, _ in PLAN:
        r = rows[i]
        assert (r.gen_ids, r.state.nfe, r.cells) == alone(lm, PROMPTS[i], spec, gen_len), spec


def test_a_dropped_row_leaves_the_others_as_they_were():
    lm = model("tiny-llada")
    engine = Engine(lm)
    ids = [encode_prompts(lm, [p], chat=True)[0] for p in PROMPTS[:3]]
    keep = [
        engine.add(ids[0], parse("vanilla"), 32, 16),
        engine.add(ids[2], parse("cadllm"), 32, 16),
    ]
    gone = engine.add(ids[1], parse("dynamic-dllm"), 64, 16)
    for _ in range(3):
        engine.step()
    engine.drop(gone)  # a client that went away
    assert gone not in engine.rows
    while engine.live:
        engine.step()
    assert len(engine.rows) == 2 and engine.canvas.shape[0] == 2  # its slot is gone
    for r, p, spec in zip(keep, (PROMPTS[0], PROMPTS[2]), ("vanilla", "cadllm"), strict=True):
        assert (r.gen_ids, r.state.nfe, r.cells) == alone(lm, p, spec, 32)


def test_bad_rows_are_refused_before_they_join():
    lm = model("tiny-llada")
    engine = Engine(lm)
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add([], parse("vanilla"), 8, 8)
    with pytest.raises(ValueError, match="gen_len must be > 0"):
        engine.add([1, 2], parse("vanilla"), 0, 8)
    with pytest.raises(ValueError, match="exceeds the model's"):
        engine.add([1] * 10, parse("vanilla"), lm.args.max_seq_len, 8)
    assert engine.rows == []

"""Property tests (hypothesis): every preset with random overrides, on both shipped tiny models,
keeps the decoding invariants. Derandomized, so CI draws the same cases every run; bounded to
about a minute in all.

Invariants: decoding terminates within gen_len forwards; no MASK is left; each position is
revealed once and keeps its token; the same seed gives the same output at temperature 1; a batch
decodes as its prompts one by one, tokens and NFE, at temperature 0 and at temperature 1 with a
seed (each row has its own policy instances and its own generator).
"""

from __future__ import annotations

from functools import cache

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis not installed (dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from unmask.generate import generate, stream_generate  # noqa: E402
from unmask.models.load import load  # noqa: E402
from unmask.recipe import PRESETS, parse  # noqa: E402
from unmask.tasks import get_task  # noqa: E402

EXAMPLES = 40  # per model and property

PROMPTS = [s.prompt for s in get_task("arith", shots=0).samples("test", 3)]


@cache
def model(name: str):
    return load(name)


def floats(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.floats(lo, hi).map(lambda v: f"{v:.3f}")


OVERRIDES = {
    "unmask": st.one_of(
        st.just("quota"),
        floats(0.3, 1.0).map(lambda t: f"threshold:tau={t}"),
        floats(0.2, 3.0).map(lambda f: f"factor:factor={f}"),
        st.tuples(floats(0.5, 1.0), floats(0, 0.01)).map(lambda p: f"apd:tau={p[0]},alpha={p[1]}"),
    ),
    "refresh": st.one_of(
        st.sampled_from(["none", "dual", "prefix"]),
        st.integers(1, 6).map(lambda k: f"dkv:interval={k}"),
        st.tuples(st.integers(1, 9), st.integers(1, 5), floats(0, 1)).map(
            lambda p: f"dllm-cache:kp={p[0]},kr={p[1]},rho={p[2]}"
        ),
        st.tuples(st.integers(0, 12), st.integers(0, 6), st.sampled_from(["x", "v"])).map(
            lambda p: f"dcu:budget={p[0]},window={p[1]},proxy={p[2]}"
        ),
    ),
    "blocks": st.integers(2, 16).map(lambda n: f"fixed:len={n}"),
    "eos_exit": st.sampled_from(["true", "false"]),
}


@st.composite
def recipes(draw) -> str:
    spec = draw(st.sampled_from(sorted(PRESETS)))
    roles = draw(st.lists(st.sampled_from(sorted(OVERRIDES)), unique=True, max_size=3))
    for role in roles:
        spec += f"+{role}={draw(OVERRIDES[role])}"
    return spec


COMMON = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_invariants_of_every_recipe(name: str) -> None:
    lm = model(name)

    @COMMON
    @given(spec=recipes(), gen_len=st.integers(4, 32), prompt=st.sampled_from(PROMPTS))
    def check(spec: str, gen_len: int, prompt: str) -> None:
        recipe = parse(spec)
        events = list(stream_generate(lm, prompt, recipe, gen_len=gen_len, block_len=8))
        out = events[-1].outputs[0]
        assert events[-1].done and sum(e.done for e in events) == 1
        assert len(out.ids) == gen_len and lm.args.mask_id not in out.ids
        assert out.metrics.nfe == len(events) <= gen_len
        revealed_at: dict[int, int] = {}
        for k, e in enumerate(events):
            assert e.reveal[0].any() or not e.masked[0].any()  # progress while masks remain
            assert not (e.reveal[0] & ~e.masked[0]).any()  # only masked positions are revealed
            for j in e.reveal[0].nonzero().flatten().tolist():
                pos = e.block.start + j
                assert pos not in revealed_at, (spec, pos)  # once
                revealed_at[pos] = k
                assert out.ids[pos] == int(e.cand[0, j])  # and never changed afterwards
        unrevealed = set(range(gen_len)) - set(revealed_at)
        if recipe.eos_exit:  # the exit fills what is left with EOS
            assert all(out.ids[p] == lm.args.eos_id for p in unrevealed)
        else:
            assert unrevealed == set()

    check()


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_seeded_sampling_is_deterministic(name: str) -> None:
    lm = model(name)

    @COMMON
    @given(spec=recipes(), seed=st.integers(0, 2**31), prompt=st.sampled_from(PROMPTS))
    def check(spec: str, seed: int, prompt: str) -> None:
        recipe = parse(f"{spec}+temperature=1+seed={seed}")
        a = generate(lm, prompt, recipe, gen_len=16, block_len=8)[0]
        b = generate(lm, prompt, recipe, gen_len=16, block_len=8)[0]
        assert a.ids == b.ids

    check()


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_a_batch_decodes_as_its_prompts_one_by_one(name: str) -> None:
    lm = model(name)

    @COMMON
    @given(
        spec=recipes(),
        gen_len=st.integers(4, 24),
        temperature=st.sampled_from([0, 1]),
        seed=st.integers(0, 2**31),
    )
    def check(spec: str, gen_len: int, temperature: int, seed: int) -> None:
        spec = f"{spec}+temperature={temperature}+seed={seed}"
        recipe = parse(spec)
        kw = {"gen_len": gen_len, "block_len": 8}
        together = [(o.ids, o.metrics.nfe) for o in generate(lm, PROMPTS, recipe, **kw)]
        alone = [(o.ids, o.metrics.nfe) for p in PROMPTS for o in generate(lm, p, recipe, **kw)]
        assert together == alone, spec

    check()

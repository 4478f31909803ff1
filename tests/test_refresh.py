"""Refresh policies and the rules built on per-step state: exactness against the no-cache path
when told to refresh everything, DCU's window and budgets, APD's reduction to a threshold."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from unmask.generate import generate, stream_generate
from unmask.policies.refresh import DCU, DLLMCache, water_fill, window_mask
from unmask.recipe import parse

DLLM_LAYER0_FULL_DEFAULT = DLLMCache().layer0_full
THRESHOLD = "vanilla+unmask=threshold:tau=0.3,dream_first=false"
PROMPT = "Question: Tom has 3 apples. He buys 2 more. How many apples does Tom have?\nAnswer:"


def ids(lm, spec, gen_len=24, block_len=8):
    return generate(lm, PROMPT, parse(spec), gen_len=gen_len, block_len=block_len)[0]


@pytest.mark.parametrize(
    "spec,reference",
    [
        ("vanilla+blocks=fixed:len=1+refresh=dual", "vanilla+blocks=fixed:len=1"),
        ("vanilla+blocks=fixed:len=1+refresh=prefix", "vanilla+blocks=fixed:len=1"),
        ("vanilla+refresh=dkv:interval=1", "vanilla"),
        ("vanilla+refresh=dllm-cache:kp=1,kr=1", "vanilla"),
        ("vanilla+refresh=dllm-cache:kp=1,kr=1000,rho=1", "vanilla"),
        ("vanilla+refresh=dcu:budget=24,window=4,prompt_interval=1", "vanilla"),
        ("vanilla+refresh=dcu:budget=24,window=4,prompt_interval=1,proxy=v", "vanilla"),
        ("vanilla+refresh=dcu:budget=24,prompt_interval=1,alloc=uniform", "vanilla"),
        ("vanilla+unmask=apd:tau=0.3,alpha=0,beta=0", "vanilla+unmask=threshold:tau=0.3"),
        (
            "vanilla+unmask=apd:tau=0.3,alpha=0,beta=0,scope=block",
            "vanilla+unmask=threshold:tau=0.3",
        ),
    ],
)
def test_refresh_everything_equals_no_cache(tiny_loaded, spec, reference):
    got, want = ids(tiny_loaded, spec), ids(tiny_loaded, reference)
    assert got.ids == want.ids
    if "apd" not in spec:
        assert got.metrics.rows == want.metrics.rows  # truly every row, every layer


def test_dual_with_one_block_and_tau_one_reveals_one_per_step(tiny_loaded):
    out = ids(tiny_loaded, "fast-dllm+blocks=fixed:len=24+unmask=threshold:tau=1")
    assert out.metrics.nfe == 24


@pytest.mark.parametrize("spec", ["fast-dllm", "dkv-cache", "dllm-cache", "dynamic-dllm"])
def test_caches_compute_fewer_rows_than_vanilla(tiny_loaded, spec):
    assert ids(tiny_loaded, spec).metrics.rows < ids(tiny_loaded, "vanilla").metrics.rows


def test_window_mask_is_shifted_not_shrunk():
    key = torch.tensor([-1, 0, 5, 9])
    got = window_mask(key, window=4, G=10).int().tolist()
    assert got == [
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    ]
    # W = 0 keeps the key token alone; an odd W takes 2*(W//2)+1 rows, as the released code.
    assert window_mask(key, window=0, G=10).int().argmax(-1).tolist() == [0, 0, 5, 9]
    assert window_mask(key, window=0, G=10).sum().item() == 4
    assert window_mask(key, window=3, G=10).sum(-1).tolist() == [3, 3, 3, 3]


def test_water_fill_is_proportional_capped_and_conserves_what_fits():
    assert water_fill(torch.tensor([1.0, 1.0, 2.0]), 8, cap=10) == [2, 2, 4]
    # The third layer is capped at 5; its excess goes to the others in proportion.
    assert water_fill(torch.tensor([1.0, 1.0, 6.0]), 12, cap=5) == [3, 3, 5]
    assert water_fill(torch.tensor([0.1, 0.9]), 100, cap=7) == [7, 7]


def window_moves(lm, spec) -> list[bool]:
    """For consecutive steps: did the confidences of the still-masked positions next to the key
    token (the last revealed one, +-2) change? (Positions whose left neighbour is revealed are
    skipped: Dream reads position p at p-1, whose own embedding changed.)"""
    events = list(stream_generate(lm, PROMPT, parse(spec), gen_len=16, block_len=16))
    out = []
    for a, b in zip(events, events[1:], strict=False):
        key = int(a.reveal[0].nonzero().max())
        near = torch.zeros_like(b.masked)
        near[:, max(0, key - 2) : key + 3] = True
        keep = near & b.masked
        keep[:, 1:] &= b.masked[:, :-1]
        if keep.any():
            out.append(not torch.equal(a.conf[keep], b.conf[keep]))
    return out


def test_window_unsticks_the_key_token(tiny_loaded):
    """Without a window (and no budget) a masked token's layer inputs never change, so the
    proxy never selects it and its prediction stays frozen however its context changes ("stuck
    in the mud"). The mandatory window recomputes the key token's neighbourhood every step."""
    stuck = window_moves(tiny_loaded, "vanilla+refresh=dcu:budget=0,window=0")
    assert len(stuck) > 3 and not any(stuck)
    moving = window_moves(tiny_loaded, "vanilla+refresh=dcu:budget=0,window=4")
    assert len(moving) > 3 and all(moving)


@pytest.mark.parametrize("model", ["tiny-llada", "tiny-dream"])
def test_eos_exit_keeps_the_answer_text(model):
    """On a trained checkpoint, whose answers end well before gen_len, the answer text must not
    change, and with parallel reveal the exit must happen (fewer forwards). (Vanilla reveals one
    position a step, the confident EOS padding first, so it cannot exit early.)"""
    from unmask.models.load import load
    from unmask.tasks import get_task

    lm = load(model)
    task = get_task("arith")
    for spec in ["vanilla", "fast-dllm", "dynamic-dllm"]:
        for sample in task.samples("test", 2):
            a = generate(lm, sample.prompt, parse(spec), gen_len=task.gen_len)[0]
            b = generate(lm, sample.prompt, parse(spec + "+eos_exit=true"), gen_len=task.gen_len)[0]
            assert a.text == b.text and task.score(sample, b.text)
            if spec != "vanilla":
                assert b.metrics.nfe < a.metrics.nfe, (model, spec, sample.prompt)


@pytest.mark.parametrize("full_steps", [2, 1])
def test_dkv_cached_steps_recompute_masked_and_last_revealed_only(ckpt_root, full_steps):
    """The first full_steps steps of a block (2: the LLaDA code; 1: the Dream code) and every
    interval-th are full; the others recompute the masked rows and those revealed last step."""
    from conftest import make_checkpoint

    from unmask.models.load import load

    lm = load(make_checkpoint(ckpt_root, "llada")[0])
    G = 24
    masked_left, prev, full = G, 0, []
    recipe = parse(f"vanilla+refresh=dkv:interval=4,full_steps={full_steps}")
    for ev in stream_generate(lm, PROMPT, recipe, gen_len=G, block_len=12):
        i = ev.step_in_block
        is_full = ev.rows[0, 0].item() > G
        full.append(is_full)
        assert is_full == (i < full_steps or i % 4 == 0)
        if not is_full:
            assert ev.rows[0].tolist() == [masked_left + prev] * lm.args.n_layers
        prev = int(ev.reveal.sum())
        masked_left -= prev
    assert not all(full)


def test_dream_dual_cache_recomputes_only_the_block(ckpt_root):
    from conftest import make_checkpoint

    from unmask.models.load import load

    lm = load(make_checkpoint(ckpt_root, "dream")[0])
    events = list(stream_generate(lm, PROMPT, parse("fast-dllm+blocks=fixed:len=8"), gen_len=24))
    inner = [ev for ev in events if ev.step_in_block > 0]
    assert inner and all(ev.rows[0, 0].item() == 8 for ev in inner)
    assert all(
        ev.reveal[0].tolist() == [True] + [False] * 7 for ev in events if ev.step_in_block == 0
    )  # Dream's block-start rule


def test_cadllm_rows_keep_their_own_blocks_in_a_batch(tiny_loaded):
    """Each row has its own confidence history, so its own block sizes: a batch of different
    prompts decodes as each prompt alone, blocks, NFE and cells included."""
    prompts = [PROMPT, "Question: Ann has 12 cards. She gives away 5. How many?\nAnswer:"]
    for spec in ("cadllm", "cadllm+temperature=1+seed=5"):
        recipe = parse(spec)
        events = list(stream_generate(tiny_loaded, prompts, recipe, gen_len=40))
        together = events[-1].outputs
        for b, prompt in enumerate(prompts):
            alone = list(stream_generate(tiny_loaded, prompt, recipe, gen_len=40))
            mine = [ev for ev in events if ev.batch_index == b]
            assert [ev.block for ev in mine] == [ev.block for ev in alone]
            out = alone[-1].outputs[0]
            assert together[b].ids == out.ids
            assert together[b].metrics.nfe == out.metrics.nfe
            assert together[b].metrics.rows == out.metrics.rows


def test_dcu_default_sizes_follow_the_paper() -> None:
    """B = W = 32 (the paper's setting at gen_len 256), scaled by gen_len/8 only above that."""
    for gen_len, want in ((16, 32), (64, 32), (256, 32), (512, 64), (1024, 128)):
        assert DCU().sizes(SimpleNamespace(gen_len=gen_len)) == (want, want)
    assert DCU(budget=8, window=4).sizes(SimpleNamespace(gen_len=512)) == (8, 4)


def test_dcu_budget_layers_gives_the_released_code_s_32_layer_total(tiny_loaded):
    """budget_layers=32 on this shallow model: from the second cached step each layer's budget is
    budget * 32 / n_layers, as the released code's int(B * 32 * w) with uniform w; unset, B."""
    n = tiny_loaded.args.n_layers
    assert n != 32

    def rows(extra):
        spec = f"vanilla+refresh=dcu:budget=2,window=0,alloc=uniform,gen_interval=5000{extra}"
        events = list(stream_generate(tiny_loaded, PROMPT, parse(spec), gen_len=24))
        return [ev.rows[0].tolist() for ev in events]

    plain, code = rows(""), rows(",budget_layers=32")
    # step 0 computes everything; step 1, the first cached one, has measured nothing yet
    assert plain[1] == code[1] == [1 + 2] * n  # the key token's window (1 row) + the budget
    assert len(plain) > 3 and all(r == [1 + 2] * n for r in plain[2:])
    assert all(r == [1 + min(2 * 32 // n, 24 - 1)] * n for r in code[2:])  # capped at G - 1


@pytest.mark.parametrize("proxy", ["x", "v"])
def test_dcu_fresh_v_switch_is_honoured_by_both_proxies(tiny_loaded, proxy):
    """fresh_v=false keeps the cached V of rows DCU skips; true overwrites it with the fresh V.
    The recomputed rows attend to those values, so their confidences must differ somewhere."""

    def confs(fresh):
        spec = (
            f"vanilla+refresh=dcu:budget=2,window=2,layer0_full=false,proxy={proxy},fresh_v={fresh}"
        )
        return [ev.conf for ev in stream_generate(tiny_loaded, PROMPT, parse(spec), gen_len=24)]

    a, b = confs("true"), confs("false")
    assert len(a) == len(b) and any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_dkv_dream_shift_rules():
    """Dream's dKV rows on a cached step: "un" recomputes row p while p+1 is not cached yet
    (masked or revealed last step); "un_right" also while p itself is not."""
    from unmask.policies.refresh import DKVCache

    masked = torch.tensor([[False, False, True, False, True, True, False]])
    prev = torch.tensor([[False, False, False, True, False, False, False]])
    ctx = SimpleNamespace(step_in_block=2, masked=masked, logit_shift=True, canvas=masked.long())
    want_un = [[False, True, True, True, True, False, False]]  # fresh shifted left by one
    for shift, want in [
        ("un", want_un),
        ("un_right", [[False, True, True, True, True, True, False]]),
    ]:
        policy = DKVCache(interval=8, shift=shift)
        policy._prev = prev
        assert policy.plan(ctx).mask.tolist() == want
    with pytest.raises(ValueError, match="shift must be"):
        DKVCache(shift="left")


@pytest.mark.parametrize(
    "spec,extra",
    [
        ("vanilla", False),
        ("fast-dllm", False),
        ("dllm-cache", True),  # V of every generated row is its similarity signal
        ("vanilla+refresh=dcu:budget=4,window=4", True),  # fresh V of rows it skips
        ("dynamic-dllm-dcu", False),  # B = W = 32 recompute all 32 generated rows
        ("vanilla+refresh=dcu:budget=4,window=4,fresh_v=false", False),
    ],
)
def test_v_only_projections_are_counted(tiny_loaded, spec, extra):
    m = ids(tiny_loaded, spec, gen_len=32, block_len=8).metrics
    assert (m.v_only_rows > 0) == extra
    assert m.to_dict()["cost_rows"] == pytest.approx(m.rows + m.v_cost * m.v_only_rows)


def test_v_only_count_is_the_generated_rows_a_layer_skips(tiny_loaded):
    """dLLM-Cache, never refreshed after the cold step, every layer recomputing rho * G = 8 of
    the 32 generated rows: each of the 31 later steps projects V for the 24 others, per layer."""
    spec = "vanilla+blocks=fixed:len=8+refresh=dllm-cache:kp=1000,kr=1000,rho=0.25"
    m = ids(tiny_loaded, spec, gen_len=32, block_len=8).metrics
    L = tiny_loaded.args.n_layers
    assert m.nfe == 32 and not DLLM_LAYER0_FULL_DEFAULT
    assert m.v_only_rows == 31 * L * (32 - 8)
    # the cold step recomputes the whole canvas, every later step the 8 chosen rows per layer
    assert m.rows == L * (m.prompt_tokens + 32) + 31 * L * 8


def test_v_cost_at_llada_8b_shapes():
    from unmask.generate import v_cost
    from unmask.models.layers import ModelArgs

    a = ModelArgs("llada", 126464, 4096, 32, 32, 32, 12288, 5e5, 1e-5, False, 4096, 0, 0, False)
    # V: 4096 x 4096 of a row's 2 x 4096^2 (Q, O) + 2 x 4096^2 (K, V) + 3 x 4096 x 12288 (MLP)
    assert v_cost(a) == pytest.approx(1 / 13)


@pytest.mark.parametrize("preset", ["fast-dllm", "fast-dllm-factor"])
def test_dream_block_start_commits_the_first_position_only(ckpt_root, preset):
    """Fast-dLLM's Dream loop: each block's first (full) step commits its first position alone,
    for the threshold and the factor rule alike."""
    from conftest import make_checkpoint

    from unmask.models.load import load

    lm = load(make_checkpoint(ckpt_root, "dream")[0])
    events = stream_generate(lm, PROMPT, parse(f"{preset}+blocks=fixed:len=8"), gen_len=24)
    starts = [ev for ev in events if ev.step_in_block == 0]
    assert len(starts) == 3
    assert all(ev.reveal[0].tolist() == [True] + [False] * 7 for ev in starts)


@pytest.mark.parametrize(
    "spec",
    [
        "dynamic-dllm",
        "dynamic-dllm-code",
        "dynamic-dllm+refresh=dcu:budget=4,window=6,prompt_interval=3,gen_interval=5",
        "vanilla+refresh=dcu:budget=3,window=0,alloc=uniform,proxy=v",
        "vanilla+refresh=dcu:budget=100,window=100",
        "dllm-cache",
        "vanilla+refresh=dllm-cache:kp=3,kr=2,rho=0.5,layer0_full=true",
    ],
)
def test_plan_counts_match_their_masks(tiny_loaded, spec, monkeypatch):
    """A layered plan states its row count, and whether its rows hold a prompt row, so that the
    forward needs no host sync for either; both must say exactly what the mask says."""
    from unmask.models import layers

    G = 24
    real, checked = layers.mask_to_rows, []

    def checking(mask, n=None):
        if n is not None:
            assert n == int(mask.sum(-1).max()), (n, mask.sum(-1).tolist())
            checked.append(n)
        return real(mask, n)

    monkeypatch.setattr(layers, "mask_to_rows", checking)
    from unmask.policies.refresh import DCUPlan, DLLMCachePlan

    for cls in (DCUPlan, DLLMCachePlan):

        def checking_rows(plan, layer, signals, real_rows=cls.layer_rows):
            got = real_rows(plan, layer, signals)
            if got.mask is not None and got.gen_only is not None:  # the plan's word on prompt rows
                assert got.gen_only == (not got.mask[:, : plan.ctx.gen_start].any())
                checked.append(got.gen_only)
            return got

        monkeypatch.setattr(cls, "layer_rows", checking_rows)
    prompts = [PROMPT, "Question: Ann has 12 cards. She gives away 5. How many?\nAnswer:"]
    generate(tiny_loaded, prompts, parse(spec), gen_len=G, block_len=8)
    assert any(isinstance(c, int) and not isinstance(c, bool) for c in checked)
    assert any(isinstance(c, bool) for c in checked)

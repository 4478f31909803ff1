"""The trainer: the masked-diffusion loss falls within seconds on a tiny config, and a resumed
run continues exactly where an uninterrupted one would be."""

from __future__ import annotations

import pytest
import torch

from unmask.tokenizer import Tokenizer
from unmask.train import Batches, TrainConfig, ar_loss, diffusion_loss, new_model, train


def tiny_cfg(out, steps, family="llada"):
    return TrainConfig(
        family=family,
        out=str(out),
        steps=steps,
        batch=8,
        lr=3e-3,
        warmup=5,
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_kv_heads=2,
        mlp_hidden=64,
        save_every=5,
        tasks={"reverse": 1.0},
    )


def fixed_loss(cfg, state):
    tok = Tokenizer.from_dir(f"{cfg.out}/tokenizer")
    model = new_model(cfg, tok)
    model.load_state_dict(state)
    ids, is_answer = Batches(cfg, tok).get(10_000)
    with torch.no_grad():
        return float(diffusion_loss(model, ids, is_answer, torch.Generator().manual_seed(0), 1e-3))


def test_loss_falls_for_both_families(tmp_path):
    for family in ("llada", "dream"):
        cfg = tiny_cfg(tmp_path / family, steps=40, family=family)
        train(cfg, log=lambda *_: None)
        state = torch.load(tmp_path / family / "train_state.pt", weights_only=False)
        torch.manual_seed(cfg.seed)
        tok = Tokenizer.from_dir(tmp_path / family / "tokenizer")
        before = fixed_loss(cfg, new_model(cfg, tok).state_dict())
        after = fixed_loss(cfg, state["model"])
        assert after < 0.7 * before, (family, before, after)


def test_resume_continues_the_same_run(tmp_path):
    train(tiny_cfg(tmp_path / "straight", steps=10), log=lambda *_: None)
    train(tiny_cfg(tmp_path / "resumed", steps=5), log=lambda *_: None)
    train(tiny_cfg(tmp_path / "resumed", steps=10), log=lambda *_: None)
    a = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=False)
    assert a["step"] == b["step"] == 10
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # The exported checkpoint loads and decodes.
    from unmask.generate import generate
    from unmask.models.load import load
    from unmask.recipe import parse

    lm = load(tmp_path / "resumed" / "checkpoint")
    out = generate(lm, "Reverse the list: 1 2 3", parse("vanilla"), gen_len=8, block_len=8)[0]
    assert len(out.ids) == 8


def test_worker_processes_build_the_same_batches_in_order(tmp_path):
    cfg = tiny_cfg(tmp_path / "w", steps=3)
    train(cfg, log=lambda *_: None)  # builds the tokenizer
    data = Batches(cfg, Tokenizer.from_dir(tmp_path / "w" / "tokenizer"))
    inline = list(data.stream(4, 9, workers=0))
    ahead = list(data.stream(4, 9, workers=2))
    assert len(inline) == len(ahead) == 5
    for (a_ids, a_mask), (b_ids, b_mask) in zip(inline, ahead, strict=True):
        assert torch.equal(a_ids, b_ids) and torch.equal(a_mask, b_mask)


def test_snapshots_keep_every_save(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", steps=10)
    cfg.snapshots = True
    train(cfg, log=lambda *_: None)
    snaps = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert snaps == ["step-10", "step-5"]
    last = tmp_path / "run" / "snapshots" / "step-10" / "model.safetensors"
    assert last.read_bytes() == (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()


def test_warm_start_carries_shared_tokens_across_tokenizers(tmp_path):
    import pytest

    from unmask.models import load as ckpt
    from unmask.train import warm_start

    source = train(tiny_cfg(tmp_path / "src", steps=5), log=lambda *_: None)
    # Another task suite, so another tokenizer: digits and specials are shared, words are not.
    cfg = tiny_cfg(tmp_path / "dst", steps=5)
    cfg.tasks, cfg.init = {"wordy": 1.0}, str(source)
    logs = []
    train(cfg, log=logs.append)
    assert any("warm start" in line for line in logs)
    src = ckpt.load(source)
    tok = Tokenizer.from_dir(tmp_path / "dst" / "tokenizer")
    torch.manual_seed(0)
    model = new_model(cfg, tok)
    shared = warm_start(model, tok, str(source))
    old = src.tokenizer.backend.get_vocab(with_added_tokens=True)
    new = tok.backend.get_vocab(with_added_tokens=True)
    assert 0 < shared == len(old.keys() & new.keys()) < len(new)
    for token in ("7", "<|mdm_mask|>"):
        assert torch.equal(model.embed.weight[new[token]], src.model.embed.weight[old[token]])
        assert torch.equal(model.lm_head.weight[new[token]], src.model.lm_head.weight[old[token]])
    assert torch.equal(model.layers[0].q_proj.weight, src.model.layers[0].q_proj.weight)
    # A different shape or family is refused, naming what differs.
    wide = tiny_cfg(tmp_path / "wide", steps=5)
    wide.d_model, wide.tasks = 48, {"wordy": 1.0}
    with pytest.raises(ValueError, match="--d-model"):
        warm_start(new_model(wide, tok), tok, str(source))
    with pytest.raises(ValueError, match="llada model, not dream"):
        warm_start(new_model(tiny_cfg(tmp_path, 5, family="dream"), tok), tok, str(source))


@pytest.mark.slow
def test_compiled_training_runs(tmp_path):
    # torch.compile's backward once broke on how the layer split and rotated Q/K (a stride
    # assertion at the first backward): the trainer's --compile path must keep running.
    cfg = tiny_cfg(tmp_path, steps=3)
    cfg.compile = True
    train(cfg, log=lambda *_: None)
    assert torch.load(tmp_path / "train_state.pt", weights_only=False)["step"] == 3


class _Recorder:
    """Stands in for the model: keeps the noisy input, returns uniform logits."""

    def __init__(self, args):
        self.args, self.seen, self.key_mask = args, None, None

    def __call__(self, noisy, key_mask=None):
        self.seen, self.key_mask = noisy, key_mask
        return torch.zeros(*noisy.shape, self.args.vocab_size)


def test_semi_ar_masking_is_one_block_between_clean_and_masked(tmp_path):
    cfg = tiny_cfg(tmp_path / "s", steps=1)
    train(cfg, log=lambda *_: None)  # builds the tokenizer
    tok = Tokenizer.from_dir(tmp_path / "s" / "tokenizer")
    ids, is_answer = Batches(cfg, tok).get(3)
    rec = _Recorder(new_model(cfg, tok).args)
    mask, block, gen_len = rec.args.mask_id, 8, 32
    # semi_ar 0 draws what the plain loss draws.
    plain = diffusion_loss(rec, ids, is_answer, torch.Generator().manual_seed(1), 1e-3)
    first = rec.seen
    same = diffusion_loss(rec, ids, is_answer, torch.Generator().manual_seed(1), 1e-3, 0.0)
    assert torch.equal(first, rec.seen) and torch.equal(plain, same)
    loss = diffusion_loss(
        rec, ids, is_answer, torch.Generator().manual_seed(1), 1e-3, 1.0, block, gen_len
    )
    assert torch.isfinite(loss)
    starts = set()
    for row, ans in zip(rec.seen, is_answer, strict=True):
        a0 = int(ans.int().argmax())
        masked = (row == mask)[a0:].tolist()
        assert not (row == mask)[:a0].any()  # the prompt is never masked
        first_masked = masked.index(True) if True in masked else len(masked)
        b0 = first_masked - first_masked % block  # the block the first mask falls in
        assert all(masked[b0 + block :])  # everything after the block is masked
        assert not any(masked[:b0])  # the answer before it is clean
        assert b0 < gen_len
        starts.add(b0)
    assert len(starts) > 1  # the block moves across examples
    # Mixed tasks with different block lengths are refused.
    mixed = tiny_cfg(tmp_path / "m", steps=1)
    mixed.tasks, mixed.semi_ar = {"reverse": 0.5, "wordy": 0.5}, 0.5
    with pytest.raises(ValueError, match="one block and answer length"):
        Batches(mixed, tok)


def test_semi_ar_blind_hides_the_block_from_every_other_position(tmp_path):
    cfg = tiny_cfg(tmp_path / "b", steps=1, family="dream")
    train(cfg, log=lambda *_: None)  # builds the tokenizer
    tok = Tokenizer.from_dir(tmp_path / "b" / "tokenizer")
    ids, is_answer = Batches(cfg, tok).get(3)
    model = new_model(cfg, tok)
    rec = _Recorder(model.args)
    mask, block, gen_len = rec.args.mask_id, 8, 32

    def run(semi_ar, *blind):
        g = torch.Generator().manual_seed(1)
        loss = diffusion_loss(rec, ids, is_answer, g, 1e-3, semi_ar, block, gen_len, *blind)
        return loss, rec.seen, rec.key_mask

    # blind 0 draws exactly what semi-AR masking alone draws, with no key mask.
    loss0, seen0, km0 = run(0.5)
    loss1, seen1, km1 = run(0.5, 0.0)
    assert km0 is None and km1 is None and torch.equal(seen0, seen1) and torch.equal(loss0, loss1)
    _, seen, km = run(1.0, 1.0)
    T = ids.shape[1]
    assert km.shape == (len(ids), T, T)
    for b in range(len(ids)):
        a0 = int(is_answer[b].int().argmax())
        first = int((seen[b, a0:] == mask).int().argmax())
        b0 = a0 + first - first % block
        in_block = torch.zeros(T, dtype=torch.bool)
        in_block[b0 : b0 + block] = is_answer[b, b0 : b0 + block]
        # Queries in the block see every key; every other query sees every key but the block's.
        assert km[b][in_block].all()
        assert torch.equal(km[b][~in_block], ~in_block.expand(int((~in_block).sum()), T))
    # So in the real model, what the block holds never reaches a position outside it.
    other = seen.clone()
    other[km.logical_not().any(1)] = tok.token_to_id("<|endoftext|>")  # rewrite every block
    with torch.no_grad():
        x, y = model(seen, key_mask=km), model(other, key_mask=km)
        outside = km.all(-1)  # [B, T] queries that see everything are the block's own
        assert torch.equal(x[~outside], y[~outside])
        assert not torch.allclose(model(seen)[~outside], model(other)[~outside])
    bad = tiny_cfg(tmp_path / "x", steps=1)
    bad.semi_ar_blind = 0.5
    with pytest.raises(ValueError, match="share .* of the --semi-ar examples"):
        train(bad, log=lambda *_: None)


class _Tap:
    """Runs the real model and keeps what it was given."""

    def __init__(self, model):
        self.model, self.args, self.calls = model, model.args, []

    def __call__(self, noisy, pos=None, key_mask=None):
        self.calls.append((noisy, pos, key_mask))
        return self.model(noisy, pos=pos, key_mask=key_mask)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_semi_ar_stale_outside_rows_see_the_block_as_it_began(tmp_path, family):
    cfg = tiny_cfg(tmp_path / "s", steps=1, family=family)
    train(cfg, log=lambda *_: None)  # builds the tokenizer
    tok = Tokenizer.from_dir(tmp_path / "s" / "tokenizer")
    ids, is_answer = Batches(cfg, tok).get(3)
    torch.manual_seed(0)
    model = new_model(cfg, tok).eval()
    mask, block, gen_len = model.args.mask_id, 8, 32
    B, T = ids.shape

    def run(*shares):
        tap = _Tap(model)
        with torch.no_grad():
            loss = diffusion_loss(
                tap,
                ids,
                is_answer,
                torch.Generator().manual_seed(1),
                1e-3,
                1.0,
                block,
                gen_len,
                *shares,
            )
        return loss, tap.calls[0]

    # stale 0 draws exactly what it drew before, in one plain forward.
    l0, (x0, p0, k0) = run(0.0)
    l1, (x1, p1, k1) = run(0.0, 0.0)
    assert k0 is None and p0 is None and torch.equal(x0, x1) and torch.equal(l0, l1)
    _, (x, pos, km) = run(0.0, 1.0)
    assert x.shape == (B, T + block) and km.shape == (B, T + block, T + block)
    with torch.no_grad():
        y = model(x, pos=pos, key_mask=km)
    for b in range(B):
        a0 = int(is_answer[b].int().argmax())
        first = int((x[b, a0:T] == mask).int().argmax())
        b0 = a0 + first - first % block
        in_block = torch.zeros(T, dtype=torch.bool)
        in_block[b0 : b0 + block] = is_answer[b, b0 : b0 + block]
        fresh = in_block  # Dream too: the column before the block keeps its block-start K/V
        n = int(fresh.sum())
        # The copy stands at the block's positions, every one masked.
        assert torch.equal(pos[b, T : T + n], torch.arange(b0, b0 + n))
        assert (x[b, T : T + n] == mask).all()
        # Outside rows and the copy compute a plain forward of the block-start answer...
        start = torch.where(in_block, mask, x[b, :T])[None]
        with torch.no_grad():
            ref = model(start)[0]
        torch.testing.assert_close(y[b, :T][~fresh], ref[~fresh], rtol=0, atol=1e-5)
        torch.testing.assert_close(y[b, T : T + n], ref[fresh], rtol=0, atol=1e-5)
        # ...while the block reads the block as it is, never its copy.
        assert km[b, :T][fresh][:, :T].all() and not km[b, :T][fresh][:, T:].any()
    # Rewriting the block moves the block's rows and no outside one, nor the copy.
    fresh_rows = km[:, :T, :T].all(-1) & ~km[:, :T, T:].any(-1)  # [B, T] see all real keys
    block_cols = fresh_rows
    other = x.clone()
    other[:, :T][block_cols] = tok.token_to_id("<|endoftext|>")
    with torch.no_grad():
        z = model(other, pos=pos, key_mask=km)
    assert torch.equal(y[:, :T][~fresh_rows], z[:, :T][~fresh_rows])
    assert torch.equal(y[:, T:], z[:, T:])
    assert not torch.equal(y[:, :T][block_cols], z[:, :T][block_cols])
    bad = tiny_cfg(tmp_path / "x", steps=1)
    bad.semi_ar_stale = 0.5
    with pytest.raises(ValueError, match="share .* of the --semi-ar examples"):
        train(bad, log=lambda *_: None)
    bad.semi_ar, bad.semi_ar_blind = 0.5, 0.6
    with pytest.raises(ValueError, match="sum must be <= 1"):
        train(bad, log=lambda *_: None)


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_semi_ar_stale_view_is_what_the_dual_cache_decodes(name):
    """The stale view trains exactly the step the engine runs: every dual-cache step after a
    block's first, under Fast-dLLM's rule (for Dream, the block's first position is revealed at
    that first step), has the confidences of the training forward on the canvas it starts from."""
    from unmask.generate import encode_prompts, stream_generate
    from unmask.models.load import load
    from unmask.recipe import parse
    from unmask.tasks import get_task
    from unmask.train import _stale_forward

    lm = load(name)
    a, task = lm.args, get_task("arith")
    s = task.samples("test", 1)[0]
    ids = encode_prompts(lm, [s.prompt], True)[0]
    P, G = len(ids), task.gen_len
    canvas = torch.tensor([ids + [a.mask_id] * G])
    T, checked = canvas.shape[1], 0
    recipe = parse("fast-dllm+unmask=threshold:tau=1.0")  # one position a step, mostly
    for ev in stream_generate(lm, s.prompt, recipe, gen_len=G):  # blocks of 32
        lo, hi = P + ev.block.start, P + ev.block.end
        if ev.step_in_block > 0:
            in_block = torch.zeros(1, T, dtype=torch.bool)
            in_block[0, lo:hi] = True
            one = torch.ones(1, 1, dtype=torch.bool)
            with torch.no_grad():
                lg = _stale_forward(
                    lm.model,
                    canvas,
                    torch.ones(1, T, T, dtype=torch.bool),
                    one,
                    torch.tensor([[lo]]),
                    in_block,
                    hi - lo,
                )[0]
            if a.logit_shift:
                lg = torch.cat([lg[:1], lg[:-1]])
            lg[:, a.mask_id] = float("-inf")
            conf = torch.softmax(lg[lo:hi].double(), -1).max(-1).values
            m = ev.masked[0]
            torch.testing.assert_close(conf[m], ev.conf[0][m].double(), rtol=0, atol=1e-4)
            checked += int(m.sum())
        canvas[0, lo:hi] = torch.where(ev.reveal[0], ev.cand[0], canvas[0, lo:hi])
    assert checked > 0


def test_ar_phase_is_causal_next_token_and_dream_only(tmp_path):
    cfg = tiny_cfg(tmp_path / "ar", steps=30, family="dream")
    cfg.objective = "ar"
    tok_dir = tmp_path / "ar" / "tokenizer"
    torch.manual_seed(0)
    train(cfg, log=lambda *_: None)
    tok = Tokenizer.from_dir(tok_dir)
    model = new_model(cfg, tok)
    model.load_state_dict(torch.load(tmp_path / "ar" / "train_state.pt")["model"])
    ids, is_answer = Batches(cfg, tok).get(10_000)
    T = ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None].expand(len(ids), -1, -1)
    later = ids.clone()
    later[:, T // 2 :] = tok.token_to_id("<|mask|>")
    with torch.no_grad():
        a, b = model(ids, key_mask=causal), model(later, key_mask=causal)
        # Under the causal mask a position never sees what is right of it; without it, it does.
        assert torch.equal(a[:, : T // 2], b[:, : T // 2])
        assert not torch.allclose(model(ids)[:, : T // 2], model(later)[:, : T // 2])
        # 30 steps of the AR phase already beat the untrained model's next-token loss.
        fresh = new_model(cfg, tok)
        assert float(ar_loss(model, ids, is_answer)) < float(ar_loss(fresh, ids, is_answer)) - 0.5
    # LLaDA is not next-token, and an AR phase masks nothing: both refused in one line.
    for bad in (tiny_cfg(tmp_path / "l", steps=1), tiny_cfg(tmp_path / "d", 1, "dream")):
        bad.objective = "ar"
        if bad.family == "dream":
            bad.semi_ar = 0.5
        with pytest.raises(ValueError, match="autoregressive phase is Dream's"):
            train(bad, log=lambda *_: None)

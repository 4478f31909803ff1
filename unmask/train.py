"""The tiny-model trainer: LLaDA's masked-diffusion SFT objective on the synthetic task suite,
for both families, seeded and resumable. Decoding and evaluation live elsewhere."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from unmask.models import load as ckpt
from unmask.models.layers import ModelArgs, Transformer
from unmask.tasks import get_task
from unmask.tokenizer import Tokenizer, build_tokenizer

STATE = "train_state.pt"
END_OF_TURN = {"llada": "<|eot_id|>", "dream": "<|im_end|>"}
MASK_TOKEN = {"llada": "<|mdm_mask|>", "dream": "<|mask|>"}


@dataclass
class TrainConfig:
    family: str = "llada"
    out: str = "runs/tiny-llada"
    steps: int = 20000
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 300
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    mlp_hidden: int = 352
    rope_theta: float = 10000.0
    vocab_size: int = 512
    tasks: dict[str, float] = field(default_factory=lambda: {"arith": 0.85, "reverse": 0.15})
    seed: int = 0
    save_every: int = 500
    threads: int = 0  # 0: torch's default
    compile: bool = False  # torch.compile the forward/backward (~1.2x per step on this CPU)
    device: str = "cpu"  # where the steps run; data and random draws stay on the CPU
    workers: int = 0  # processes building batches ahead of the steps (a GPU outruns one core)
    snapshots: bool = False  # keep every save's checkpoint as OUT/snapshots/step-N
    eps: float = 1e-3  # smallest mask ratio, as in LLaDA
    # Share of examples masked the way semi-autoregressive decoding sees an answer: one block of
    # the task's block_len masked w.p. t, the answers before it clean, everything after it masked;
    # only that block's masked positions are scored (0: LLaDA's uniform masking only).
    semi_ar: float = 0.0
    # Share of those semi-AR examples in which the positions outside the block do not attend to
    # it, so their keys and values never depend on what the block holds. A block cache (Fast-
    # dLLM's prefix/dual cache, and every method built on one) keeps them so while the block
    # fills; large dLLMs barely change them (Fast-dLLM measures adjacent steps' K/V as nearly
    # equal), and a small model trained only bidirectionally leans on their freshness instead.
    semi_ar_blind: float = 0.0
    # Share of the semi-AR examples seen exactly as a dual cache sees them: the positions outside
    # the block read it as it stood when the block began (every position masked), through a
    # masked copy of the block at the same positions, while the block's own positions read the
    # block as it is. That is what Fast-dLLM's dual cache computes at every step after a block's
    # first (for Dream too: its loop reveals the block's first position at that first step, so
    # the column before the block, whose output predicts it, keeps its block-start K/V).
    semi_ar_stale: float = 0.0
    init: str | None = None  # warm start from a checkpoint of the same family and shape
    # "diffusion": the masked-diffusion loss above. "ar": next-token prediction under a causal
    # mask, Dream only: Dream-7B starts from an autoregressive model (Qwen2.5-7B), and an AR
    # phase followed by the diffusion loss is that recipe at this scale.
    objective: str = "diffusion"


def chat_ids(tok: Tokenizer, prompt: str) -> list[int]:
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True
    )
    return tok.encode(text)


class Batches(torch.utils.data.Dataset):
    """Deterministic stream: batch k is a pure function of (config, k)."""

    def __init__(self, cfg: TrainConfig, tok: Tokenizer):
        self.cfg = cfg
        self.tok = tok
        self.tasks = {name: get_task(name) for name in cfg.tasks}
        self.names = list(cfg.tasks)
        self.weights = [cfg.tasks[n] for n in self.names]
        self.eot = tok.token_to_id(END_OF_TURN[cfg.family])
        self.eos = tok.token_to_id("<|endoftext|>")
        shapes = {(t.block_len, t.gen_len) for t in self.tasks.values()}
        if cfg.semi_ar > 0 and len(shapes) > 1:
            raise ValueError(
                f"semi-AR masking needs one block and answer length across --tasks, got "
                f"{', '.join(f'{n}: {t.block_len}/{t.gen_len}' for n, t in self.tasks.items())}"
            )
        self.blocks = min(shapes)  # (block_len, gen_len) that semi-AR masking uses

    def example(self, k: int, j: int) -> tuple[list[int], list[int]]:
        rng = random.Random(self.cfg.seed * 1_000_003 + k * 1009 + j)
        name = rng.choices(self.names, self.weights)[0]
        task = self.tasks[name]
        s = task.samples("train", 1, start=k * self.cfg.batch + j)[0]
        answer = self.tok.encode(s.reference) + [self.eot]
        answer = answer[: task.gen_len] + [self.eos] * max(0, task.gen_len - len(answer))
        return chat_ids(self.tok, s.prompt), answer

    def get(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, T] (EOS-padded on the right, as LLaDA's SFT) and answer mask [B, T]."""
        rows = [self.example(k, j) for j in range(self.cfg.batch)]
        T = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), T), self.eos, dtype=torch.long)
        is_answer = torch.zeros(len(rows), T, dtype=torch.bool)
        for b, (p, a) in enumerate(rows):
            ids[b, : len(p) + len(a)] = torch.tensor(p + a)
            is_answer[b, len(p) :] = True  # trailing EOS padding is answer too
        return ids, is_answer

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.get(k)

    def stream(self, start: int, stop: int, workers: int):
        """Batches start..stop-1 in order, built by `workers` processes ahead of use (0: inline)."""
        if workers == 0:
            return (self.get(k) for k in range(start, stop))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers; no warning
        loader = torch.utils.data.DataLoader(
            self,
            batch_size=None,
            sampler=range(start, stop),
            num_workers=workers,
            prefetch_factor=8,
            persistent_workers=False,
        )
        return iter(loader)


def diffusion_loss(
    model: Transformer,
    ids: torch.Tensor,
    is_answer: torch.Tensor,
    gen: torch.Generator,
    eps: float,
    semi_ar: float = 0.0,
    block: int = 32,
    gen_len: int = 128,
    blind: float = 0.0,
    stale: float = 0.0,
) -> torch.Tensor:
    """LLaDA SFT loss: t ~ U(eps, 1) per example, mask answer positions w.p. t, CE/t on masked.
    With `semi_ar` > 0, that share of the examples is masked as a semi-autoregressive decode sees
    its answer instead (TrainConfig.semi_ar); their loss is the CE/t of the one block, averaged
    over the block. semi_ar 0 draws exactly what it always did. `blind` is the share of the
    semi-AR examples whose positions outside the block see no key inside it
    (TrainConfig.semi_ar_blind); 0 draws exactly what it always did. `stale` is the share, beside
    those, whose outside positions see the block as it stood at its start (TrainConfig.
    semi_ar_stale): the forward then runs over T + block columns, the last a
    masked copy of the block at the block's positions; 0 draws exactly what it always did."""
    a = model.args
    B, T = ids.shape
    # Stratified t (one uniform offset, B evenly spaced strata, shuffled): the same marginal
    # U(eps, 1) per example with a lower-variance batch loss, as in MDLM's sampler.
    # The draws come from a CPU generator, so a run's masks are the same on every device.
    u = (torch.arange(B) + torch.rand(1, generator=gen)) / B
    t = (eps + (1 - eps) * u[torch.randperm(B, generator=gen)])[:, None]  # [B, 1]
    masked = (torch.rand(B, T, generator=gen) < t).to(ids.device) & is_answer  # [B, T]
    scored, per = masked, is_answer.sum(1).clamp(min=1)
    key_mask = None
    if semi_ar > 0:
        pick = (torch.rand(B, generator=gen) < semi_ar).to(ids.device)[:, None]  # [B, 1]
        start = is_answer.int().argmax(1, keepdim=True)  # [B, 1] the answer's first column
        k = (torch.rand(B, generator=gen) * -(-gen_len // block)).long().to(ids.device)[:, None]
        rel = torch.arange(T, device=ids.device)[None] - start - k * block  # 0 at block start
        in_block = (rel >= 0) & (rel < block) & is_answer
        after = (rel >= block) & is_answer
        masked = torch.where(pick, (masked & in_block) | after, masked)
        scored = torch.where(pick, masked & in_block, masked)
        per = torch.where(pick[:, 0], in_block.sum(1).clamp(min=1), per)
        if blind > 0 or stale > 0:
            u = torch.rand(B, generator=gen).to(ids.device)[:, None]  # [B, 1] which view
            shut = pick & (u < blind)
            outside = shut & ~in_block  # [B, T] query rows that must not see the block
            key_mask = ~(outside[:, :, None] & in_block[:, None, :])  # [B, T, T] keys seen
            if stale > 0:
                late = pick & (u >= blind) & (u < blind + stale)  # [B, 1]
    t = t.to(ids.device)
    noisy = torch.where(masked, torch.full_like(ids, a.mask_id), ids)
    if stale > 0 and semi_ar > 0:
        logits = _stale_forward(model, noisy, key_mask, late, start + k * block, in_block, block)
    elif key_mask is None:
        logits = model(noisy)  # [B, T, V]
    else:
        logits = model(noisy, key_mask=key_mask)
    if a.logit_shift:
        # Dream: the output at p-1 predicts position p; the answer never starts at column 0.
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, T]
    per_example = (ce * scored / t).sum(1) / per
    return per_example.mean()


def _stale_forward(
    model: Transformer,
    noisy: torch.Tensor,
    key_mask: torch.Tensor,
    late: torch.Tensor,
    first: torch.Tensor,
    in_block: torch.Tensor,
    block: int,
) -> torch.Tensor:
    """Logits [B, T, V] of a forward in which the `late` rows' block is seen as a dual cache
    sees it (TrainConfig.semi_ar_stale). F, the fresh columns, are the block's. A copy C of the
    block, every position masked, is appended at the block's positions: rows outside F see the
    other columns and C, so they and C compute exactly a plain forward of the answer with the
    block all masked; rows in F see every real column. For Dream the column before the block is
    an outside row too: Fast-dLLM's Dream loop reveals the block's first position at the block's
    full first step, so that column, whose output predicts it, is never recomputed after it."""
    B, T = noisy.shape
    j = torch.arange(block, device=noisy.device)[None]  # [1, block]
    cols = first + j  # [B, block] the real column each copy column stands for
    safe = cols.clamp(0, T - 1)
    valid = late & (cols < T) & in_block.gather(1, safe)  # [B, block]
    fresh = in_block & late  # [B, T] F
    copy = torch.full_like(safe, model.args.mask_id)
    # [B, T+block, T+block]: real rows keep their mask (all keys, or the blind one) over real keys;
    # late examples' rows outside F trade F's keys for C's; C sees the same; F sees real keys.
    n = T + block
    km = torch.zeros(B, n, n, dtype=torch.bool, device=noisy.device)
    km[:, :T, :T] = key_mask
    stale_keys = torch.cat([~fresh, valid], 1)  # [B, n] keys of the block-start forward
    rows_stale = torch.cat([late & ~fresh, valid], 1)  # [B, n]
    km = torch.where(rows_stale[:, :, None], stale_keys[:, None, :], km)
    km[:, T:, T:] |= torch.eye(block, dtype=torch.bool, device=noisy.device)  # unused C: itself
    pos = torch.cat([torch.arange(T, device=noisy.device).expand(B, T), safe], 1)
    return model(torch.cat([noisy, copy], 1), pos=pos, key_mask=km)[:, :T]


def ar_loss(model: Transformer, ids: torch.Tensor, is_answer: torch.Tensor) -> torch.Tensor:
    """Next-token loss of an autoregressive phase: a causal mask, nothing masked, the output at
    p-1 predicting p (Dream's shift is already next-token), scored on the answer positions (its
    EOS padding included, as the diffusion loss scores it), averaged per example."""
    B, T = ids.shape
    causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()[None].expand(B, -1, -1)
    logits = model(ids, key_mask=causal)[:, :-1]  # [B, T-1, V]: position p-1 predicts p
    ce = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # [B, T-1]
    scored = is_answer[:, 1:]
    return ((ce * scored).sum(1) / scored.sum(1).clamp(min=1)).mean()


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cos)


def corpus(cfg: TrainConfig, n: int = 4000):
    for name in cfg.tasks:
        for s in get_task(name).samples("train", n):
            yield s.prompt
            yield s.reference


def new_model(cfg: TrainConfig, tok: Tokenizer) -> Transformer:
    vocab = tok.vocab_size
    args = ModelArgs(
        family=cfg.family,
        vocab_size=vocab,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_kv_heads,
        mlp_hidden=cfg.mlp_hidden,
        rope_theta=cfg.rope_theta,
        norm_eps=1e-5 if cfg.family == "llada" else 1e-6,
        qkv_bias=cfg.family == "dream",
        max_seq_len=1024,
        mask_id=tok.token_to_id(MASK_TOKEN[cfg.family]),
        eos_id=tok.token_to_id("<|endoftext|>"),
        logit_shift=cfg.family == "dream",
        block_head_first=cfg.family == "dream",
    )
    model = Transformer(args)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.data /= math.sqrt(2 * cfg.n_layers)
        elif name.endswith("bias"):
            torch.nn.init.zeros_(p)
    return model


def warm_start(model: Transformer, tok: Tokenizer, source: str) -> int:
    """Copy `source`'s weights into a fresh `model` whose tokenizer may differ: every non-vocabulary
    tensor must match in shape; embedding and output rows are copied for each token string both
    vocabularies hold (the rest keep their fresh init). Returns how many token rows were copied."""
    src = ckpt.load(source)
    if src.args.family != model.args.family:
        raise ValueError(f"--init {source} is a {src.args.family} model, not {model.args.family}")
    theirs = src.model.state_dict()
    mine = model.state_dict()
    vocab_tensors = {"embed.weight", "lm_head.weight"}
    for name, tensor in mine.items():
        if name in vocab_tensors:
            continue
        if name not in theirs or theirs[name].shape != tensor.shape:
            got = tuple(theirs[name].shape) if name in theirs else "nothing"
            raise ValueError(
                f"--init {source}: {name} is {got} there, {tuple(tensor.shape)} here; "
                "pass the same --d-model/--n-layers/--n-heads/--mlp-hidden"
            )
        tensor.copy_(theirs[name].to(tensor.dtype))
    old = src.tokenizer.backend.get_vocab(with_added_tokens=True)
    pairs = [
        (i, old[t]) for t, i in tok.backend.get_vocab(with_added_tokens=True).items() if t in old
    ]
    new_ids = torch.tensor([i for i, _ in pairs])
    old_ids = torch.tensor([j for _, j in pairs])
    for name in vocab_tensors & set(theirs):
        mine[name][new_ids] = theirs[name][old_ids].to(mine[name].dtype)
    return len(pairs)


def export(model: Transformer, tok: Tokenizer, tok_dir: Path, out: Path) -> None:
    ckpt.save(model, out, tok_dir, pad_id=model.args.eos_id, tokenizer_vocab_size=tok.vocab_size)


def _cpu(obj):
    """A state dict with every tensor on the CPU, so a state saved on a GPU resumes anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def load_state(path: Path) -> tuple[dict, TrainConfig]:
    """A training state this trainer wrote, unpickled with torch's weights-only loader (tensors,
    containers and numbers only: a planted pickle cannot run code), checked before use."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path}: not a training state this trainer wrote (not tensors and plain data; "
            "refused to unpickle it)"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(
            f"{path}: corrupt or truncated training state ({type(e).__name__})"
        ) from None
    expected = {"config": dict, "model": dict, "opt": dict, "step": int, "wall_s": float}
    if not isinstance(state, dict) or any(
        not isinstance(state.get(k), t) for k, t in expected.items()
    ):
        raise ValueError(f"{path}: not a training state (expected {', '.join(expected)})")
    try:
        cfg = TrainConfig(**state["config"])
    except TypeError as e:
        raise ValueError(f"{path}: its config does not fit this trainer ({e})") from None
    return state, cfg


def train(cfg: TrainConfig, resume: bool = True, log=print) -> Path:
    if cfg.objective not in ("diffusion", "ar"):
        raise ValueError(f"objective {cfg.objective!r}: use diffusion or ar")
    if not 0 <= cfg.semi_ar_blind <= 1 or (cfg.semi_ar_blind > 0 and cfg.semi_ar == 0):
        raise ValueError("--semi-ar-blind is a share (0-1) of the --semi-ar examples: pass both")
    if not 0 <= cfg.semi_ar_stale <= 1 or (cfg.semi_ar_stale > 0 and cfg.semi_ar == 0):
        raise ValueError("--semi-ar-stale is a share (0-1) of the --semi-ar examples: pass both")
    if cfg.semi_ar_blind + cfg.semi_ar_stale > 1:
        raise ValueError(
            "--semi-ar-blind and --semi-ar-stale share the --semi-ar examples: "
            f"their sum must be <= 1, got {cfg.semi_ar_blind + cfg.semi_ar_stale}"
        )
    if cfg.objective == "ar" and (cfg.family != "dream" or cfg.semi_ar > 0):
        raise ValueError(
            "an autoregressive phase is Dream's (its logits are already next-token) and "
            "takes no --semi-ar"
        )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok_dir = out / "tokenizer"
    state_path = out / STATE
    if resume and state_path.is_file():
        state, saved = load_state(state_path)
        if not (tok_dir / "tokenizer.json").is_file():
            raise ValueError(
                f"{out} has a training state but no tokenizer in {tok_dir}; restore it, or "
                "start over with --fresh"
            )
        if saved.family != cfg.family:
            raise ValueError(f"{out} holds a {saved.family} run; pass a fresh --out")
        # What may change across a resume: length, cadence, threads, compile, batch size (the
        # data stream is indexed by step, so a new batch size just draws other samples).
        saved.steps, saved.save_every, saved.threads = cfg.steps, cfg.save_every, cfg.threads
        saved.compile, saved.device, saved.workers = cfg.compile, cfg.device, cfg.workers
        saved.batch, saved.snapshots = cfg.batch, cfg.snapshots
        cfg = saved
    else:
        state = None
        build_tokenizer(cfg.family, corpus(cfg), tok_dir, vocab_size=cfg.vocab_size)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    tok = Tokenizer.from_dir(tok_dir)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = new_model(cfg, tok).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    step, wall = 0, 0.0
    if state is None and cfg.init:
        shared = warm_start(model, tok, cfg.init)
        log(f"warm start from {cfg.init}: {shared} of {tok.vocab_size} token rows carried over")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])  # moves the moments to the parameters' device
        step, wall = state["step"], state["wall_s"]
        log(f"resumed {out} at step {step} ({wall / 60:.1f} min trained so far)")
    data = Batches(cfg, tok)
    history_path = out / "history.jsonl"
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.family}", unit="step")
    model.train()
    # Compiled or not, the parameters are the model's own: state and checkpoint are unchanged.
    forward = torch.compile(model, dynamic=True) if cfg.compile else model
    ema = None
    batches = data.stream(step, cfg.steps, cfg.workers)
    t0 = time.perf_counter()
    while step < cfg.steps:
        ids, is_answer = (x.to(device) for x in next(batches))
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        if cfg.objective == "ar":
            loss = ar_loss(forward, ids, is_answer)
        else:
            loss = diffusion_loss(
                forward,
                ids,
                is_answer,
                gen,
                cfg.eps,
                cfg.semi_ar,
                *data.blocks,
                cfg.semi_ar_blind,
                cfg.semi_ar_stale,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        now = time.perf_counter()
        dt, t0 = now - t0, now
        wall += dt
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{ids.numel() / dt:.0f}")
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.steps:
            torch.save(
                {
                    "config": asdict(cfg),
                    "model": _cpu(model.state_dict()),
                    "opt": _cpu(opt.state_dict()),
                    "step": step,
                    "wall_s": wall,
                },
                state_path.with_suffix(".tmp"),
            )
            state_path.with_suffix(".tmp").replace(state_path)
            export(model, tok, tok_dir, out / "checkpoint")
            if cfg.snapshots:
                snap = out / "snapshots" / f"step-{step}"
                shutil.rmtree(snap, ignore_errors=True)
                shutil.copytree(out / "checkpoint", snap)
            with history_path.open("a") as f:
                f.write(json.dumps({"step": step, "loss": ema, "wall_s": round(wall, 1)}) + "\n")
            t0 = time.perf_counter()  # wall_s counts steps (data waits included), not saves
    bar.close()
    return out / "checkpoint"

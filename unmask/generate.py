"""The one decoding loop. `stream_generate` yields a StepEvent per step; `generate` drains it.
Policies decide (policies/); the model computes (models/); this file only runs the phases.

Dimension letters used across the package: B batch, T canvas (prompt + generated), L block,
N rows computed, M rows a decision needs, V vocab, D model width, H heads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from unmask.cache import Cache
from unmask.models.load import Loaded
from unmask.policies.blocks import Block
from unmask.policies.refresh import FixedPlan
from unmask.policies.unmasking import top_k_mask
from unmask.recipe import Recipe
from unmask.step import RowState, RowView, StepPlan

DEFAULT_GEN_LEN = 64
DEFAULT_BLOCK_LEN = 32


@dataclass
class Metrics:
    """Per sample. `rows` counts (position x layer) cells recomputed, a machine-free cost."""

    nfe: int
    rows: int
    n_layers: int
    prompt_tokens: int
    answer_tokens: int  # up to and including the first EOS/EOT
    all_tokens: int  # every generated position
    wall_s: float
    # Cells where only V was projected on top of `rows` (dLLM-Cache's and DCU's V proxy and
    # fresh V). Each costs a fraction of a row: v_cost of the model (about 0.08 at 8B shapes).
    v_only_rows: int = 0
    v_cost: float = 0.0

    @property
    def ar_floor(self) -> int:
        """Cells an autoregressive model with a KV cache computes for the same text."""
        return (self.prompt_tokens + self.answer_tokens) * self.n_layers

    @property
    def rows_over_ar_floor(self) -> float:
        return self.rows / self.ar_floor

    @property
    def cost_rows(self) -> float:
        """rows plus the V-only cells, weighted by what a V projection costs against a row."""
        return self.rows + self.v_cost * self.v_only_rows

    @property
    def answer_tokens_per_s(self) -> float:
        return self.answer_tokens / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def all_tokens_per_s(self) -> float:
        return self.all_tokens / self.wall_s if self.wall_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in (
            "ar_floor",
            "rows_over_ar_floor",
            "cost_rows",
            "answer_tokens_per_s",
            "all_tokens_per_s",
        ):
            d[k] = getattr(self, k)
        return d


@dataclass
class Output:
    text: str
    ids: list[int]  # the whole generated region
    metrics: Metrics


@dataclass
class StepEvent:
    """One row's denoising step, as every consumer (CLI, server, bench, plots) sees it. A batch
    yields one event per row still decoding at each step, in row order; each row has its own
    block, counters and policy state, so its events are those it would have alone."""

    step: int  # this row's steps before this one
    batch_index: int  # the row's place in its batch
    block: Block
    step_in_block: int
    masked: Tensor  # [1, L] block positions still masked before this step
    reveal: Tensor  # [1, L] revealed at this step
    cand: Tensor  # [1, L] candidate ids
    conf: Tensor  # [1, L] confidence of the candidates
    nfe: int  # forward passes so far in this row
    rows: Tensor  # [1, n_layers] cells recomputed at this step
    elapsed_s: float
    info: dict[str, Any] = field(default_factory=dict)  # values policies chose (B_t, tau_t, ...)
    outputs: list[Output] | None = None  # set on the request's last event

    @property
    def done(self) -> bool:
        return self.outputs is not None

    def summary(self) -> dict[str, Any]:
        """This step as plain JSON values: where the block is, what was revealed with what
        confidence, the cells each layer recomputed, and the values policies chose."""
        reveal = self.reveal[0]
        offs = torch.arange(self.block.start, self.block.end, device=reveal.device)
        return {
            "step": self.step,
            "row": self.batch_index,
            "block": [self.block.start, self.block.end],
            "step_in_block": self.step_in_block,
            "nfe": self.nfe,
            "masked": int(self.masked[0].sum()),
            "revealed": offs[reveal].tolist(),
            "revealed_conf": [round(float(c), 4) for c in self.conf[0][reveal].float()],
            "rows": self.rows[0].tolist(),
            "elapsed_s": round(self.elapsed_s, 6),
            "info": {k: _plain(v) for k, v in self.info.items()},
        }


def _plain(v: Any) -> Any:
    """A policy's info value as JSON: tensors become numbers or lists."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def encode_prompts(lm: Loaded, prompts: list[str], chat: bool) -> list[list[int]]:
    out = []
    for p in prompts:
        if not p.strip():
            raise ValueError("empty prompt")
        text = lm.tokenizer.apply_chat_template([{"role": "user", "content": p}]) if chat else p
        out.append(lm.tokenizer.encode(text))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(eq=False)
class _Row:
    """One row of a batch: its state, its policies' view of it, its own policy instances."""

    state: RowState
    view: RowView
    recipe: Recipe
    warm: bool = False  # its cache holds an earlier step
    cells: int = 0  # (position x layer) cells recomputed
    v_only: int = 0

    @property
    def wants_gen_logits(self) -> bool:
        return any(p.wants_gen_logits for p in self.recipe.policies)

    def open_block(self) -> Block:
        """The row's current block, opening the next one with masks in it once it has none."""
        s = self.state
        while s.block is None or not bool(self.view.masked[:, self.view.cols(s.block)].any()):
            start = 0 if s.block is None else s.block.end
            if start >= s.gen_len:
                raise RuntimeError("masks left behind the last block: a policy wrote outside it")
            s.block = self.recipe.blocks.next_block(start, self.view)
            s.step_in_block = 0
        return s.block


@torch.no_grad()
def stream_generate(
    lm: Loaded,
    prompts: str | list[str],
    recipe: Recipe,
    *,
    gen_len: int | None = None,
    block_len: int | None = None,
    chat: bool = True,
    stop: list[str] | None = None,
) -> Iterator[StepEvent]:
    """Decode `prompts` as one batch (left-padded so the generated regions align). Every row
    runs its own copy of the recipe's policies and its own random stream, seeded alike, so a
    prompt decodes the same alone or in any batch; the rows share each forward."""
    model, a = lm.model, lm.args
    device = next(model.parameters()).device
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    G = next(n for n in (recipe.gen_len, gen_len, DEFAULT_GEN_LEN) if n is not None)
    if G <= 0:
        raise ValueError(f"gen_len must be > 0, got {G}")
    L = DEFAULT_BLOCK_LEN if block_len is None else block_len
    if L <= 0:
        raise ValueError(f"block_len must be > 0, got {L}")
    ids = encode_prompts(lm, prompts, chat)
    B, P = len(ids), max(len(i) for i in ids)
    T = P + G
    if T > a.max_seq_len:
        raise ValueError(f"prompt ({P}) + gen_len ({G}) = {T} exceeds the model's {a.max_seq_len}")

    _sync(device)
    t0 = time.perf_counter()
    lens = torch.tensor([len(i) for i in ids], device=device)
    canvas = torch.full((B, T), a.eos_id, dtype=torch.long, device=device)  # [B, T]
    for b, row in enumerate(ids):
        canvas[b, P - len(row) : P] = torch.tensor(row, device=device)
    canvas[:, P:] = a.mask_id
    pad = P - lens  # [B]
    col = torch.arange(T, device=device)
    pos = (col - pad[:, None]).clamp(min=0)  # [B, T] each row's own positions, as if unpadded
    key_mask = (col >= pad[:, None]) if bool((pad > 0).any()) else None  # [B, T]
    cache = Cache(
        a.n_layers,
        B,
        a.n_kv_heads,
        T,
        a.head_dim,
        a.d_model,
        next(model.parameters()).dtype,
        device,
    )
    rows: list[_Row] = []
    for b in range(B):
        state = RowState(
            canvas=canvas[b : b + 1],
            gen_start=P,
            gen_len=G,
            block_len=L,
            n_layers=a.n_layers,
            mask_id=a.mask_id,
            logit_shift=a.logit_shift,
            temperature=recipe.temperature,
            generator=torch.Generator().manual_seed(recipe.seed),
        )
        row = _Row(state, RowView(state), recipe.fresh())
        for p in row.recipe.policies:
            p.reset(row.view)
        rows.append(row)
    shift = 1 if a.logit_shift else 0
    stop_ids = torch.tensor(lm.stop_ids, device=device)
    idle = FixedPlan(torch.zeros_like(canvas[:1], dtype=torch.bool), gen_only=True)  # finished

    while True:
        alive = (canvas[:, P:] == a.mask_id).any(-1).tolist()  # [B] rows still decoding
        # 1) block and 2) plan, per row: a cold cache is filled by a full pass whatever the policy
        plans, spans = [], []
        need = torch.zeros_like(canvas, dtype=torch.bool)  # [B, T] decision rows kept fresh
        for b, row in enumerate(rows):
            if not alive[b]:
                plans.append(idle)
                spans.append((P, P + 1))
                continue
            cols = row.view.cols(row.open_block())
            refresh = row.recipe.refresh
            plans.append(refresh.plan(row.view) if row.warm else refresh.cold_plan(row.view))
            # Only still-masked positions need fresh decisions; a cache policy's stale rows stay
            # so, unless a policy reads every generated position's logits (APD's thresholds).
            if row.wants_gen_logits:
                spans.append((P, P + G))
                need[b, P - shift : P + G - shift] = True
            else:
                spans.append((cols.start, cols.stop))
                need[b, cols.start - shift : cols.stop - shift] = canvas[b, cols] == a.mask_id
        # 3) forward: hidden states of the decision rows only (Dream reads position p at p-1)
        M = max(hi - lo for lo, hi in spans)
        out_rows = torch.stack(
            [torch.arange(lo, lo + M, device=device).clamp(max=hi - 1) - shift for lo, hi in spans]
        )  # [B, M], a short row repeats its last decision row
        plan = StepPlan(plans, out_rows, need, key_mask, P)
        hidden, step_rows = model.run(
            canvas, pos, key_mask, plan, cache, warm=[r.warm for r in rows]
        )
        logits = model.compute_logits(hidden)  # [B, M, V]
        logits[..., a.mask_id] = float("-inf")  # MASK is never a candidate: reveals are final
        step_cells = step_rows.cpu()  # [B, n_layers]
        v_only = cache.take_v_only().cpu()  # one read per step
        done: list[tuple[int, Tensor, Tensor, Tensor, Tensor]] = []
        for b, row in enumerate(rows):
            if not alive[b]:
                continue
            s, block = row.state, row.state.block
            cols = row.view.cols(block)
            row.warm = True
            s.nfe += 1
            row.cells += int(step_cells[b].sum())
            row.v_only += int(v_only[b])
            lo, hi = spans[b]
            lg = logits[b : b + 1, : hi - lo]
            if row.wants_gen_logits:
                s.gen_logits = lg  # [1, G, V]
                lg = lg[:, cols.start - P : cols.stop - P]
            s.logits = lg  # [1, L, V]
            # 4) score
            cand, conf = row.recipe.scorer.score(lg, row.view)  # [1, L]
            # 5) unmask: the rule proposes, the engine enforces masked-only and >= 1 per row
            masked_blk = canvas[b : b + 1, cols] == a.mask_id  # [1, L]
            reveal = row.recipe.unmask.select(conf, masked_blk, row.view) & masked_blk
            if not bool(reveal.any()):
                reveal = top_k_mask(conf, masked_blk, torch.ones(1, dtype=torch.long))
            canvas[b : b + 1, cols] = torch.where(reveal, cand, canvas[b : b + 1, cols])
            if row.recipe.eos_exit:
                eos_exit(canvas[b : b + 1, P:], stop_ids, a.mask_id, a.eos_id)
            done.append((b, masked_blk, reveal, cand, conf))
        # 6) observe: each row's policies see that row's event
        finished = not bool((canvas[:, P:] == a.mask_id).any())
        events = []
        for b, masked_blk, reveal, cand, conf in done:
            row = rows[b]
            s = row.state
            event = StepEvent(
                step=s.step,
                batch_index=b,
                block=s.block,
                step_in_block=s.step_in_block,
                masked=masked_blk,
                reveal=reveal,
                cand=cand,
                conf=conf,
                nfe=s.nfe,
                rows=step_rows[b : b + 1],
                elapsed_s=time.perf_counter() - t0,
            )
            for p in row.recipe.policies:
                p.observe(event)
                event.info.update(p.info)
            events.append(event)
        if finished:
            _sync(device)
            wall = time.perf_counter() - t0
            events[-1].outputs = _outputs(lm, canvas[:, P:].tolist(), lens, rows, wall, stop)
        yield from events
        if finished:
            return
        for b, *_ in done:
            rows[b].state.step += 1
            rows[b].state.step_in_block += 1


def eos_exit(gen: Tensor, stop_ids: Tensor, mask_id: int, eos_id: int) -> Tensor:
    """In place on the generated region gen [B, G]: a row whose first revealed EOS/EOT has every
    position before it revealed is finished; its remaining masks become EOS. The answer text
    (everything before that first stop token) is final, as revealed tokens never change.
    Returns the rows that exited [B]."""
    stop = torch.isin(gen, stop_ids)  # [B, G]
    masked = gen == mask_id
    has = stop.any(-1)
    first = torch.where(has, stop.int().argmax(-1), gen.shape[1])
    before = masked & (torch.arange(gen.shape[1], device=gen.device) < first[:, None])
    exited = has & ~before.any(-1) & masked.any(-1)
    gen.masked_fill_(masked & exited[:, None], eos_id)
    return exited


def v_cost(a) -> float:
    """What projecting V for one row costs against recomputing the row (its weight matmuls:
    Q, K, V, O, gate, up, down), from the model's shapes; attention scores are left out."""
    d, hd = a.d_model, a.head_dim
    v = d * a.n_kv_heads * hd
    row = 2 * d * a.n_heads * hd + 2 * v + 3 * d * a.mlp_hidden
    return v / row


def _outputs(lm, gen_ids, lens, rows: list[_Row], wall, stop) -> list[Output]:
    outs = []
    stops = set(lm.stop_ids)
    for b, ids in enumerate(gen_ids):
        end = next((i for i, t in enumerate(ids) if t in stops), None)
        answer = ids if end is None else ids[: end + 1]
        text = lm.tokenizer.decode(ids if end is None else ids[:end], skip_special_tokens=True)
        for s in stop or ():
            text = text.split(s, 1)[0]
        m = Metrics(
            nfe=rows[b].state.nfe,
            rows=rows[b].cells,
            n_layers=lm.args.n_layers,
            prompt_tokens=int(lens[b]),
            answer_tokens=len(answer),
            all_tokens=len(ids),
            wall_s=wall,
            v_only_rows=rows[b].v_only,
            v_cost=v_cost(lm.args),
        )
        outs.append(Output(text=text.strip(), ids=ids, metrics=m))
    return outs


def generate(lm: Loaded, prompts: str | list[str], recipe: Recipe, **kw: Any) -> list[Output]:
    """Drain `stream_generate`; one Output per prompt."""
    for event in stream_generate(lm, prompts, recipe, **kw):
        if event.done:
            return event.outputs
    raise RuntimeError("decoding ended without a final event")


@torch.no_grad()
def reference_generate(
    model, prompt_ids: list[int], gen_len: int, block_len: int, steps: int
) -> list[int]:
    """The slow reference: LLaDA's low-confidence remasking at temperature 0 with a full
    no-cache forward per step, written plainly. The engine is tested against it."""
    a = model.args
    x = torch.tensor([prompt_ids + [a.mask_id] * gen_len])
    P = len(prompt_ids)
    n_blocks = -(-gen_len // block_len)
    for nb in range(n_blocks):
        lo, hi = P + nb * block_len, min(P + (nb + 1) * block_len, P + gen_len)
        block_steps = max(1, round(steps * (hi - lo) / gen_len))
        n0 = int((x[0, lo:hi] == a.mask_id).sum())
        quota = [n0 // block_steps + (i < n0 % block_steps) for i in range(block_steps)]
        for i in range(block_steps):
            masked = x[0] == a.mask_id
            if not masked[lo:hi].any():
                break
            logits = model(x)[0]
            if a.logit_shift:
                logits = torch.cat([logits[:1], logits[:-1]])
            logits[:, a.mask_id] = float("-inf")
            probs = torch.softmax(logits.double(), -1)
            cand = probs.argmax(-1)
            conf = probs.gather(-1, cand[:, None])[:, 0]
            conf[:lo] = -1
            conf[hi:] = -1
            conf[~masked] = -1
            k = max(1, quota[i]) if i < block_steps - 1 else int(masked[lo:hi].sum())
            for j in conf.argsort(descending=True, stable=True)[:k]:
                x[0, j] = cand[j]
    return x[0, P:].tolist()

"""The engine: live rows sharing each forward. Rows join (`add`) and leave (`drop`, or when they
finish) between steps; `step()` runs one forward over every live row and returns each row's
StepEvent. `generate.stream_generate` drives one batch through it; the server drives many
requests through one.

Layout: the rows share one canvas [B, T]. Prompts are right-aligned at a shared column P (left
padding before a shorter prompt), each row's generated region is [P, P + G_b), and right
padding follows a shorter region; padding holds EOS and is masked from every key. Policies see
only their own row, in its own coordinates (RowView: canvas [1, P_b + G_b], gen_start P_b), the
same as alone, so a row decodes the same in any batch and keeps its state when the layout
changes as rows join and leave.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from unmask.cache import Cache
from unmask.models.graphs import StepGraphs
from unmask.policies.blocks import Block
from unmask.policies.refresh import FixedPlan
from unmask.policies.unmasking import top_k_mask
from unmask.recipe import Recipe
from unmask.step import LayerRows, RowState, RowView, StepPlan


@dataclass(eq=False)
class Row:
    """One prompt being decoded: its state, its policies' view of it, its own policy copies."""

    index: int  # stable id within its engine (the order rows were added)
    prompt_ids: list[int]
    state: RowState
    view: RowView
    recipe: Recipe
    t0: float  # when it was added (perf_counter)
    warm: bool = False  # its cache holds an earlier step
    cells: int = 0  # (position x layer) cells recomputed
    v_only: int = 0
    finished: bool = False  # no MASK left in its generated region
    _slot: int | None = field(default=None, repr=False)  # its place in the current layout
    _rope: tuple[Tensor, Tensor] | None = field(default=None, repr=False)  # its own positions'

    @property
    def P(self) -> int:
        return len(self.prompt_ids)

    @property
    def G(self) -> int:
        return self.state.gen_len

    @property
    def gen_ids(self) -> list[int]:
        return self.state.canvas[0, self.P :].tolist()

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


@dataclass
class Placed:
    """A row's plan moved from its own columns to the batch's: its [1, T_b] masks are written
    at columns [offset, offset + T_b) of a [1, T] mask."""

    plan: object
    offset: int
    T: int

    def _place(self, mask: Tensor) -> Tensor:
        if self.offset == 0 and mask.shape[1] == self.T:
            return mask
        out = torch.zeros(1, self.T, dtype=torch.bool, device=mask.device)
        out[:, self.offset : self.offset + mask.shape[1]] = mask
        return out

    def fixed_rows(self) -> Tensor | None:
        mask = self.plan.fixed_rows()
        return None if mask is None else self._place(mask)

    def layer_rows(self, layer: int, signals) -> LayerRows:
        r = self.plan.layer_rows(layer, signals)
        if r.mask is None:
            return r
        return LayerRows(self._place(r.mask), r.bound, r.gen_only, r.fresh_v)


@dataclass
class Engine:
    lm: object
    rows: list[Row] = field(default_factory=list)  # in batch order
    _next: int = 0
    _dirty: bool = True  # membership changed since the layout was built
    canvas: Tensor | None = None
    cache: Cache | None = None

    def __post_init__(self) -> None:
        model = self.lm.model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        a = self.lm.args
        self.stop_ids = torch.tensor(self.lm.stop_ids, device=self.device)
        self.shift = 1 if a.logit_shift else 0
        self.P = 0  # the shared column where generated regions start
        self.key_mask: Tensor | None = None
        self.pos: Tensor | None = None

    # ---- membership ------------------------------------------------------------------------

    def add(self, prompt_ids: list[int], recipe: Recipe, gen_len: int, block_len: int) -> Row:
        """A new row; it takes part from the next step on."""
        a = self.lm.args
        if not prompt_ids:
            raise ValueError("empty prompt")
        if gen_len <= 0:
            raise ValueError(f"gen_len must be > 0, got {gen_len}")
        if block_len <= 0:
            raise ValueError(f"block_len must be > 0, got {block_len}")
        T = len(prompt_ids) + gen_len
        if T > a.max_seq_len:
            raise ValueError(
                f"prompt ({len(prompt_ids)}) + gen_len ({gen_len}) = {T} exceeds the model's "
                f"{a.max_seq_len}"
            )
        canvas = torch.tensor([prompt_ids + [a.mask_id] * gen_len], device=self.device)
        state = RowState(
            canvas=canvas,
            gen_start=len(prompt_ids),
            gen_len=gen_len,
            block_len=block_len,
            n_layers=a.n_layers,
            mask_id=a.mask_id,
            logit_shift=a.logit_shift,
            block_head_first=a.block_head_first,
            model_dtype=self.dtype,
            temperature=recipe.temperature,
            generator=torch.Generator().manual_seed(recipe.seed),
        )
        now = time.perf_counter()
        row = Row(self._next, list(prompt_ids), state, RowView(state), recipe.fresh(), now)
        self._next += 1
        for p in row.recipe.policies:
            p.reset(row.view)
        self.rows.append(row)
        self._dirty = True
        return row

    def drop(self, row: Row) -> None:
        """Remove a row (finished or abandoned); its slot and cache go at the next step."""
        if row in self.rows:
            self.rows.remove(row)
            self._dirty = True

    @property
    def live(self) -> list[Row]:
        return [r for r in self.rows if not r.finished]

    # ---- layout ----------------------------------------------------------------------------

    def _layout(self) -> None:
        """Build the shared canvas, positions, key mask and cache for the current rows, moving
        each surviving row's columns and cache entries to its new place."""
        a, rows = self.lm.args, self.rows
        P = max(r.P for r in rows)
        G = max(r.G for r in rows)
        B, T = len(rows), P + G
        canvas = torch.full((B, T), a.eos_id, dtype=torch.long, device=self.device)
        pad = torch.tensor([P - r.P for r in rows], device=self.device)
        ends = torch.tensor([P + r.G for r in rows], device=self.device)
        col = torch.arange(T, device=self.device)
        valid = (col >= pad[:, None]) & (col < ends[:, None])  # [B, T]
        cache = Cache(
            a.n_layers, B, a.n_kv_heads, T, a.head_dim, a.d_model, self.dtype, self.device
        )
        if B == 1 and getattr(self.lm, "graphs", False):
            cache.graphs = StepGraphs(capture=cache.k.is_cuda)
        old = self.cache
        if old is not None and old.attn is not None:
            cache.features()
        for b, r in enumerate(rows):
            lo, hi = P - r.P, P + r.G
            canvas[b, lo:hi] = r.state.canvas[0]
            if old is not None and r._slot is not None:
                ob, olo = r._slot, self.P - r.P
                ohi = olo + (hi - lo)
                cache.k[:, b, :, lo:hi] = old.k[:, ob, :, olo:ohi]
                cache.v[:, b, :, lo:hi] = old.v[:, ob, :, olo:ohi]
                if old.attn is not None:
                    cache.attn[:, b, lo:hi] = old.attn[:, ob, olo:ohi]
                    cache.mlp[:, b, lo:hi] = old.mlp[:, ob, olo:ohi]
        for b, r in enumerate(rows):
            r._slot = b
            r.state.canvas = canvas[b : b + 1, P - r.P : P + r.G]  # its own columns, a view
        self.canvas, self.cache, self.P = canvas, cache, P
        self.pos = (col - pad[:, None]).clamp(min=0)  # [B, T] each row's own positions
        self.key_mask = None if bool(valid.all()) else valid
        self._dirty = False

    # ---- one step --------------------------------------------------------------------------

    def _alone(
        self, b: int, row: Row, plan, out: Tensor, need: Tensor
    ) -> tuple[Tensor, Tensor, int]:
        """Row b's forward by itself, in its own columns [0, P_b + G_b), with its decision rows
        out [1, n] and needed rows need [1, P_b + G_b] in those columns: logits [n, V], cells
        per layer, V-only cells."""
        T_b = row.P + row.G
        off = self.P - row.P
        cache = self.cache.row_view(b, off, off + T_b)
        cache.rope = row._rope
        plan = StepPlan([plan], out, need, None, row.P, [row.G])
        pos = torch.arange(T_b, device=self.device)[None]
        hidden, cells = self.lm.model.run(row.state.canvas, pos, None, plan, cache, [row.warm])
        row._rope = cache.rope
        return self.lm.model.compute_logits(hidden)[0], cells[0].cpu(), int(cache.take_v_only())

    @torch.no_grad()
    def step(self, t0: float | None = None) -> list:
        """One forward over every live row; returns their StepEvents in batch order. A row that
        finishes is marked `finished` (it stays in the batch, idle, until dropped)."""
        from unmask.generate import StepEvent

        if not self.live:
            return []
        if self._dirty:
            self._layout()
        a, P, canvas = self.lm.args, self.P, self.canvas
        shift = self.shift
        plans, spans, alive, local = [], [], [], {}
        need = torch.zeros_like(canvas, dtype=torch.bool)  # [B, T] decision rows kept fresh
        idle = FixedPlan(torch.zeros_like(canvas[:1], dtype=torch.bool), gen_only=True)
        for b, row in enumerate(self.rows):
            alive.append(not row.finished)
            if row.finished:
                plans.append(idle)
                spans.append((P, P + 1))
                continue
            off = P - row.P  # batch column = row column + off
            cols = row.view.cols(row.open_block())
            refresh = row.recipe.refresh
            plan = refresh.plan(row.view) if row.warm else refresh.cold_plan(row.view)
            local[b] = plan
            plans.append(Placed(plan, off, canvas.shape[1]))
            # Only still-masked positions need fresh decisions; a cache policy's stale rows stay
            # so, unless a policy reads every generated position's logits (APD's thresholds).
            if row.wants_gen_logits:
                spans.append((P, P + row.G))
                need[b, P - shift : P + row.G - shift] = True
            else:
                lo, hi = cols.start + off, cols.stop + off
                spans.append((lo, hi))
                need[b, lo - shift : hi - shift] = canvas[b, lo:hi] == a.mask_id
        # forward: hidden states of the decision rows only (Dream reads position p at p-1)
        M = max(hi - lo for lo, hi in spans)
        out_rows = torch.stack(
            [
                torch.arange(lo, lo + M, device=self.device).clamp(max=hi - 1) - shift
                for lo, hi in spans
            ]
        )  # [B, M], a short row repeats its last decision row
        model = self.lm.model
        # Rows with per-layer plans beside rows with fixed ones (mixed recipes) run alone, each
        # in its own columns on a view of the batch's cache; the others share one forward.
        layered = {b: p for b, p in local.items() if p.fixed_rows() is None}
        if len(layered) == len(local):
            layered = {}  # all alike: the batched per-layer path serves them together
        alone = {}  # their decision and needed rows, moved to their own columns
        for b in layered:
            lo, hi, off = *spans[b], P - self.rows[b].P
            cut = slice(off, off + self.rows[b].P + self.rows[b].G)
            alone[b] = (out_rows[b : b + 1, : hi - lo] - off, need[b : b + 1, cut].clone())
            plans[b] = idle
            need[b] = False
        gen_lens = [r.G for r in self.rows]
        plan = StepPlan(plans, out_rows, need, self.key_mask, P, gen_lens)
        warm = [r.warm for r in self.rows]
        hidden, step_rows = model.run(canvas, self.pos, self.key_mask, plan, self.cache, warm)
        logits = model.compute_logits(hidden)  # [B, M, V]
        step_cells = step_rows.cpu()  # [B, n_layers]
        v_only = self.cache.take_v_only().cpu()  # one read per step
        for b, plan in layered.items():
            lo, hi = spans[b]
            logits[b, : hi - lo], step_cells[b], v_only[b] = self._alone(
                b, self.rows[b], plan, *alone[b]
            )
        step_rows = step_cells
        logits[..., a.mask_id] = float("-inf")  # MASK is never a candidate: reveals are final
        decided = []
        for b, row in enumerate(self.rows):
            if not alive[b]:
                continue
            s, view = row.state, row.view
            cols = view.cols(s.block)
            row.warm = True
            s.nfe += 1
            row.cells += int(step_cells[b].sum())
            row.v_only += int(v_only[b])
            lo, hi = spans[b]
            lg = logits[b : b + 1, : hi - lo]
            if row.wants_gen_logits:
                s.gen_logits = lg  # [1, G, V]
                lg = lg[:, cols.start - row.P : cols.stop - row.P]
            s.logits = lg  # [1, L, V]
            # score
            cand, conf = row.recipe.scorer.score(lg, view)  # [1, L]
            # unmask: the rule proposes, the engine enforces masked-only and >= 1 per row
            masked_blk = s.canvas[:, cols] == a.mask_id  # [1, L]
            reveal = row.recipe.unmask.select(conf, masked_blk, view) & masked_blk
            if not bool(reveal.any()):
                reveal = top_k_mask(conf, masked_blk, torch.ones(1, dtype=torch.long))
            s.canvas[:, cols] = torch.where(reveal, cand, s.canvas[:, cols])
            if row.recipe.eos_exit:
                eos_exit(s.canvas[:, row.P :], self.stop_ids, a.mask_id, a.eos_id)
            decided.append((b, row, masked_blk, reveal, cand, conf))
        # observe: each row's policies see that row's event
        now = time.perf_counter()
        events = []
        for b, row, masked_blk, reveal, cand, conf in decided:
            s = row.state
            event = StepEvent(
                step=s.step,
                batch_index=row.index,
                block=s.block,
                step_in_block=s.step_in_block,
                masked=masked_blk,
                reveal=reveal,
                cand=cand,
                conf=conf,
                nfe=s.nfe,
                rows=step_rows[b : b + 1],
                elapsed_s=now - (row.t0 if t0 is None else t0),
            )
            for p in row.recipe.policies:
                p.observe(event)
                event.info.update(p.info)
            events.append(event)
            s.step += 1
            s.step_in_block += 1
            if not bool((s.canvas[:, row.P :] == a.mask_id).any()):
                row.finished = True
        return events


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

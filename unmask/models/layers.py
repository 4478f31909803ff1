"""The transformer both families share (RMSNorm, RoPE, GQA attention, SwiGLU), cache-aware.

Family files (llada.py, dream.py) only map their Hub config keys and tensor names onto this.
Caching policy lives in the StepPlan the runner is given; this module knows no cache mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unmask.cache import Cache, LayerCache, LayerInput
from unmask.step import LayerRows, StepPlan


@dataclass
class ModelArgs:
    """Architecture and special ids, read from a checkpoint's config.json by the family file."""

    family: str  # "llada" | "dream"
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    rope_theta: float
    norm_eps: float
    qkv_bias: bool
    max_seq_len: int
    mask_id: int
    eos_id: int
    logit_shift: bool  # Dream predicts position p from the output at p-1
    # How the family's released decoders open a block (a decoding convention, not a property of
    # the weights; set by the family file): Fast-dLLM's and CadLLM's Dream loops reveal only the
    # block's first position, greedily, at its first step, and CadLLM's confidence history and
    # top-V list leave that step out. LLaDA's decoders have no such step.
    block_head_first: bool = False

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def config_number(cfg: dict, key: str, default: float) -> float:
    """A real-valued config.json entry; ValueError naming the key when it is not a number."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # Both reference implementations normalise in float32 and cast back before the affine weight.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_tables(pos: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and signed sin [B, N, head_dim] for integer positions [B, N], computed in float32.
    The sine's first half is negated once here, so that rotating is x * cos + swap(x) * sin
    with no negation per call (negation is exact: the same bits as rotate-half)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos.device).float() / head_dim))
    freqs = pos.float()[..., None] * inv_freq  # [B, N, head_dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    sin = emb.sin()
    sin[..., : head_dim // 2].neg_()
    return emb.cos(), sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, N, Dh], with rope_tables' cos and signed sin; rotate-half (NeoX) layout, as both
    LLaDA and Dream use: x * cos + cat(-x2, x1) * sin, computed as x * cos + cat(x2, x1) * sin'
    (sin' = cat(-sin1, sin2)) in two products and one sum, each rounded as the reference's, in
    place where a new tensor is not needed."""
    xf = x.float()
    half = xf.shape[-1] // 2
    out = xf * cos[:, None]
    swapped = torch.cat([xf[..., half:], xf[..., :half]], dim=-1)
    out += swapped.mul_(sin[:, None])
    return out.to(x.dtype)


def gather_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x [B, T, ...], rows [B, N] -> [B, N, ...]."""
    idx = rows.view(*rows.shape, *([1] * (x.dim() - 2))).expand(*rows.shape, *x.shape[2:])
    return x.gather(1, idx)


def scatter_rows(x: Tensor, rows: Tensor, src: Tensor) -> None:
    """In place: x[b, rows[b, n]] = src[b, n]."""
    idx = rows.view(*rows.shape, *([1] * (x.dim() - 2))).expand(*rows.shape, *x.shape[2:])
    x.scatter_(1, idx, src)


class Layer(nn.Module):
    """One pre-norm transformer layer. `step` is the only place a layer is computed: over the
    whole canvas without a cache (training, the reference path), or over any rows of it against
    a layer cache handle (decoding)."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        d, hd = a.d_model, a.head_dim
        self.attn_norm = RMSNorm(d, a.norm_eps)
        self.q_proj = nn.Linear(d, a.n_heads * hd, bias=a.qkv_bias)
        self.k_proj = nn.Linear(d, a.n_kv_heads * hd, bias=a.qkv_bias)
        self.v_proj = nn.Linear(d, a.n_kv_heads * hd, bias=a.qkv_bias)
        self.o_proj = nn.Linear(a.n_heads * hd, d, bias=False)
        self.mlp_norm = RMSNorm(d, a.norm_eps)
        self.gate_proj = nn.Linear(d, a.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(d, a.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(a.mlp_hidden, d, bias=False)
        self.fused = False

    def fuse_projections(self) -> None:
        """For decoding: Q/K/V and gate/up each become one matrix, so a layer runs 4 matmuls
        rather than 7. The per-projection parameters become views of the fused ones, so the
        Hub names, shapes and memory stay as they are (on this CPU the fused matmul gives the
        same bits as the separate ones; tests/test_models.py checks it)."""
        if self.fused:
            return
        pairs = (("qkv", ("q_proj", "k_proj", "v_proj")), ("gate_up", ("gate_proj", "up_proj")))
        for name, mods in pairs:
            linears = [getattr(self, m) for m in mods]
            w = torch.cat([m.weight for m in linears])
            b = None if linears[0].bias is None else torch.cat([m.bias for m in linears])
            lo = 0
            for m in linears:
                n = m.weight.shape[0]
                m.weight = nn.Parameter(w[lo : lo + n], requires_grad=False)
                if b is not None:
                    m.bias = nn.Parameter(b[lo : lo + n], requires_grad=False)
                lo += n
            self.register_buffer(f"{name}_weight", w, persistent=False)
            self.register_buffer(f"{name}_bias", b, persistent=False)
        self.qkv_sizes = [self.q_proj.weight.shape[0], *[self.k_proj.weight.shape[0]] * 2]
        self.fused = True

    def heads(self, t: Tensor, n: int) -> Tensor:
        B, N, _ = t.shape
        return t.view(B, N, n, self.a.head_dim).transpose(1, 2)  # [B, n, N, Dh]

    def attention(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
        """Rotated queries q [B, H, N, Dh] against K/V [B, Hkv, Tk, Dh]; returns [B, N, D]."""
        a = self.a
        # key_mask [B, Tk]: which keys every query sees; [B, N, Tk] (training's causal mask):
        # which keys each query sees.
        if key_mask is None:
            mask = None
        elif key_mask.dim() == 2:
            mask = key_mask[:, None, None, :]  # [B, 1, 1, Tk]
        else:
            mask = key_mask[:, None]  # [B, 1, N, Tk]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=a.n_kv_heads != a.n_heads
        )
        B, _, N, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(B, N, a.n_heads * a.head_dim))

    def values(self, normed: Tensor) -> Tensor:
        return self.heads(self.v_proj(normed), self.a.n_kv_heads)

    def mlp(self, h: Tensor) -> Tensor:
        n = self.mlp_norm(h)
        if self.fused:
            gate, up = F.linear(n, self.gate_up_weight).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(n), self.up_proj(n)
        act = F.silu(gate)
        # in place when decoding (the same bits); training keeps autograd's saved values
        act = act * up if torch.is_grad_enabled() else act.mul_(up)
        return self.down_proj(act)

    def project(self, normed: Tensor) -> tuple[Tensor, Tensor]:
        """Q and K side by side [B, N, (H + Hkv) * Dh], and V [B, N, Hkv * Dh], of `normed`
        [B, N, D] (before heads and RoPE)."""
        if self.fused:
            qkv = F.linear(normed, self.qkv_weight, self.qkv_bias)
            return qkv.split([self.qkv_sizes[0] + self.qkv_sizes[1], self.qkv_sizes[2]], dim=-1)
        return torch.cat([self.q_proj(normed), self.k_proj(normed)], dim=-1), self.v_proj(normed)

    def step(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        key_mask: Tensor | None,
        handle: LayerCache | None = None,
        rows: Tensor | None = None,
        normed: Tensor | None = None,
        v: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, N, D] the rows computed, rope their tables; rows [B, N] their canvas rows
        (None: x is the whole canvas in order). Without a handle they attend to each other;
        with one their K/V are written to it and they attend to every cached row. `normed` and
        `v` may be passed when already computed. `keep` [B, M] (indices into the N rows): every
        row's K/V are written, but only these rows go on through attention and the MLP (the last
        layer, where nothing else reads the others' outputs). Returns the layer output and the
        attention and MLP residual contributions, [B, N or M, D] each."""
        if normed is None:
            normed = self.attn_norm(x)
        a = self.a
        qk, v_new = self.project(normed)
        if keep is None and self.fused:
            # Decoding: one rotation for Q and K together (elementwise: the same bits as two).
            # Training runs unfused and rotates them apart: torch.compile's backward of the
            # joint split mis-predicts strides under dynamic shapes (torch 2.13).
            qk = apply_rope(self.heads(qk, a.n_heads + a.n_kv_heads), *rope)
            q, k = qk.split([a.n_heads, a.n_kv_heads], dim=1)
        else:
            q, k = qk.split([a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim], dim=-1)
            rq = rope
            if keep is not None:  # queries of the kept rows only
                x, q = gather_rows(x, keep), gather_rows(q, keep)
                rq = tuple(gather_rows(t, keep) for t in rope)
            q = apply_rope(self.heads(q, a.n_heads), *rq)
            k = apply_rope(self.heads(k, a.n_kv_heads), *rope)
        v = self.heads(v_new, a.n_kv_heads) if v is None else v
        if handle is not None:
            k, v = handle.update(rows, k, v)
        attn = self.attention(q, k, v, key_mask)
        h = x + attn
        mlp = self.mlp(h)
        return h + mlp, attn, mlp

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], key_mask: Tensor | None) -> Tensor:
        """Plain full forward without a cache (training and the reference path)."""
        return self.step(x, rope, key_mask)[0]


class Transformer(nn.Module):
    """Embedding, layers, final norm, LM head. `forward`: training path; `run`: plan-driven."""

    def __init__(self, a: ModelArgs, init: bool = True):
        super().__init__()
        self.args = a
        # init=False (loading, whose weights replace these): no random init of the embedding,
        # whose normal_ on the meta device imports torch._dynamo, about 2 s of every start.
        weight = None if init else torch.empty(a.vocab_size, a.d_model)
        self.embed = nn.Embedding(a.vocab_size, a.d_model, _weight=weight)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.d_model, a.norm_eps)
        self.lm_head = nn.Linear(a.d_model, a.vocab_size, bias=False)

    def rope(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        return rope_tables(pos, self.args.head_dim, self.args.rope_theta)

    def forward(
        self, ids: Tensor, pos: Tensor | None = None, key_mask: Tensor | None = None
    ) -> Tensor:
        """ids [B, T] -> logits [B, T, V] with no cache (positions 0..T-1 unless given)."""
        if pos is None:
            pos = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        rope = self.rope(pos)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, rope, key_mask)
        return self.lm_head(self.norm(x))

    def compute_logits(self, hidden: Tensor) -> Tensor:
        """hidden [B, M, D] (final-layer residual of the rows a decision needs) -> [B, M, V]."""
        return self.lm_head(self.norm(hidden)).float()

    @torch.no_grad()
    def run(
        self,
        canvas: Tensor,
        pos: Tensor,
        key_mask: Tensor | None,
        plan: StepPlan,
        cache: Cache,
        warm: list[bool] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One plan-driven forward (1 NFE) of canvas, pos [B, T].

        When every row's plan is fixed, only the union of its rows and the needed decision rows
        is carried through the layers; otherwise the whole residual stream is, and at each layer
        each row's plan picks the rows recomputed (the others add their cached contributions).
        `warm[b]`: row b's cache holds an earlier step (what its plan's signals report).
        Returns hidden [B, M, D] of plan.out_rows (a decision row that is neither recomputed
        nor needed comes back as zeros) and the rows recomputed per sample and layer [B, L].
        """
        if cache.rope is None:  # positions are fixed for a request: one table for all steps
            cache.rope = self.rope(pos)
        fixed = [p.fixed_rows() for p in plan.rows]
        if all(f is not None for f in fixed):
            mask = torch.cat(fixed) | plan.need
            if plan.valid is not None:
                mask &= plan.valid
            if plan.batch > 1:
                return self._run_packed(canvas, key_mask, plan, cache, mask)
            rows, n = mask_to_rows(mask)
            graphs = getattr(cache, "graphs", None)
            if graphs is not None and key_mask is None:  # a replayed step (models/graphs.py)
                hidden = graphs.run(self, canvas, plan, cache, rows)
                return hidden, n[:, None].expand(-1, len(self.layers)).clone()
            return self._run_fixed(canvas, key_mask, plan, cache, rows, n)
        warm = [True] * plan.batch if warm is None else warm
        return self._run_layered(canvas, key_mask, plan, cache, warm, fixed)

    def _run_fixed(self, canvas, key_mask, plan, cache, rows, n, gather: bool = False):
        # The same rows at every layer: carry only those rows; everything else is read from K/V.
        # When they are one span shared by every sample (a block, a suffix, the whole canvas)
        # they are sliced rather than gathered, and K/V are written by slice. `gather`: always
        # by index, with no host read (a graph's fixed addresses; n may then be None).
        T, N = canvas.shape[1], rows.shape[1]
        span = None if gather else _common_span(rows, n)
        if span is not None:
            at = span if span != slice(0, T) else None
            x = self.embed(canvas[:, span])  # [B, N, D]
            rope = (cache.rope[0][:, span], cache.rope[1][:, span])
            where = (plan.out_rows - span.start).clamp(0, N - 1)
            found = (plan.out_rows >= span.start) & (plan.out_rows < span.stop)
        else:
            at = rows
            x = self.embed(gather_rows(canvas, rows))  # [B, N, D]
            rope = (gather_rows(cache.rope[0], rows), gather_rows(cache.rope[1], rows))
            where, found = _positions_in(rows, plan.out_rows)
        last = len(self.layers) - 1
        for i, (layer, handle) in enumerate(zip(self.layers, cache.layers, strict=True)):
            # the last layer: K/V of every carried row, the rest for the decision rows only
            x = layer.step(x, rope, key_mask, handle, at, keep=where if i == last else None)[0]
        hidden = x * found[..., None]  # [B, M, D]
        if n is None:
            return hidden, None
        return hidden, n[:, None].expand(-1, len(self.layers)).clone()

    def _run_packed(self, canvas, key_mask, plan, cache, mask):
        # Several rows, each with its own fixed rows: their rows are packed into one sequence
        # for every row-wise matmul (no padding to the longest row), and each row attends to
        # its own columns alone, as it would by itself.
        B, T = canvas.shape
        bidx, tidx = mask.nonzero(as_tuple=True)  # [S] in row order, ascending columns
        n = mask.sum(-1)  # [B]
        seg = [0, *torch.cumsum(n, 0).tolist()]
        # each row's keys: the span of its unmasked columns (a key mask with holes inside the
        # span is passed on as a mask)
        keys = plan.valid if plan.valid is not None else key_mask
        spans, masks = [], []
        for b in range(B):
            if keys is None:
                spans.append((0, T))
                masks.append(None)
                continue
            cols = keys[b].nonzero().flatten()
            lo, hi = int(cols[0]), int(cols[-1]) + 1
            spans.append((lo, hi))
            inside = keys[b : b + 1, lo:hi]
            masks.append(None if bool(inside.all()) else inside[:, None, None, :])
        x = self.embed(canvas[bidx, tidx])[None]  # [1, S, D]
        rope = (cache.rope[0][bidx, tidx][None], cache.rope[1][bidx, tidx][None])
        a = self.args
        for layer, handle in zip(self.layers, cache.layers, strict=True):
            normed = layer.attn_norm(x)
            qk, v = layer.project(normed)
            qk = apply_rope(layer.heads(qk, a.n_heads + a.n_kv_heads), *rope)
            q, k = qk.split([a.n_heads, a.n_kv_heads], dim=1)  # [1, H, S, Dh]
            v = layer.heads(v, a.n_kv_heads)
            handle.k[bidx, :, tidx] = k[0].transpose(0, 1)
            handle.v[bidx, :, tidx] = v[0].transpose(0, 1)
            outs = []
            for b in range(B):
                if seg[b + 1] == seg[b]:
                    continue
                lo, hi = spans[b]
                qb = q[:, :, seg[b] : seg[b + 1]]
                kb, vb = handle.k[b : b + 1, :, lo:hi], handle.v[b : b + 1, :, lo:hi]
                outs.append(
                    F.scaled_dot_product_attention(
                        qb, kb, vb, attn_mask=masks[b], enable_gqa=a.n_kv_heads != a.n_heads
                    )
                )
            if not outs:  # every row idle
                break
            att = torch.cat(outs, dim=2)  # [1, H, S, Dh]
            attn = layer.o_proj(att.transpose(1, 2).reshape(1, -1, a.n_heads * a.head_dim))
            h = x + attn
            x = h + layer.mlp(h)
        where = torch.full((B, T), -1, dtype=torch.long, device=canvas.device)
        where[bidx, tidx] = torch.arange(bidx.shape[0], device=canvas.device)
        at = where.gather(1, plan.out_rows)  # [B, M]
        hidden = x[0][at.clamp(min=0)] * (at >= 0)[..., None]  # [B, M, D]
        return hidden, n[:, None].expand(-1, len(self.layers)).clone()

    def _run_layered(self, canvas, key_mask, plan, cache, warm, fixed):
        # Per-layer row sets: carry the whole residual stream; rows a layer skips take its cached
        # attention and MLP contributions (the dLLM-Cache / Dynamic-dLLM feature cache).
        rope_all = cache.rope
        x = self.embed(canvas)  # [B, T, D]
        B, T = canvas.shape
        P = plan.gen_start
        lens = plan.gen_lens or [T - P] * B
        gen_lens = torch.tensor(lens, device=x.device)
        # Rows per sample and layer stay on the device: no host sync inside the forward.
        counts = torch.zeros(B, len(self.layers), dtype=torch.long, device=x.device)
        for i, (layer, handle) in enumerate(zip(self.layers, cache.layers, strict=True)):
            inp = LayerInput(x, layer, handle, P)
            picks = [
                LayerRows(fixed[b] | plan.need[b : b + 1], gen_only=r.gen_only)
                if fixed[b] is not None  # a fixed-rows plan in a per-layer batch (mixed recipes)
                else r
                for b, r in enumerate(
                    p.layer_rows(i, inp.signals(b, warm[b], lens[b]))
                    for b, p in enumerate(plan.rows)
                )
            ]
            if all(r.mask is None for r in picks):  # every row (padding too: it is masked)
                cache.v_only += _v_only(inp, None, False, gen_lens)
                out, attn, mlp = layer.step(x, rope_all, key_mask, handle, normed=inp.normed)
                handle.write_features(None, attn, mlp)
                counts[:, i] = T if plan.valid is None else plan.valid.sum(-1)
                x = out
                continue
            fresh = [b for b, r in enumerate(picks) if r.fresh_v]
            if fresh:  # fresh V of every generated row, recomputed or not
                if len(fresh) == B:
                    handle.v[:, :, P:] = inp.gen_values()
                else:
                    handle.v[fresh, :, P:] = inp.gen_values()[fresh]
            ones = torch.ones_like(canvas[:1], dtype=torch.bool)
            mask = torch.cat([ones if r.mask is None else r.mask for r in picks])  # [B, T]
            if plan.valid is not None:
                mask &= plan.valid
            bound = None
            if all(r.mask is not None and r.bound is not None for r in picks):
                bound = max(r.bound for r in picks)
            rows, counts[:, i] = mask_to_rows(mask, bound)
            normed = gather_rows(inp.normed, rows)
            rope = (gather_rows(rope_all[0], rows), gather_rows(rope_all[1], rows))
            v, reused = None, False
            if inp.gen_v is not None:  # V of the recomputed rows from the generated rows' V
                gen_only = all(r.gen_only for r in picks) or (
                    not any(r.gen_only is False for r in picks) and bool((rows >= P).all())
                )
                if gen_only:  # (an idle row's padding index may sit left of P: clamped)
                    idx = (
                        (rows - P)
                        .clamp(min=0)[:, None, :, None]
                        .expand(-1, inp.gen_v.shape[1], -1, inp.gen_v.shape[3])
                    )
                    v, reused = inp.gen_v.gather(2, idx), True
            cache.v_only += _v_only(inp, mask, reused, gen_lens)
            _, attn, mlp = layer.step(
                gather_rows(x, rows), rope, key_mask, handle, rows, normed=normed, v=v
            )
            handle.write_features(rows, attn, mlp)
            A, M = handle.contributions()
            x = x + A + M
        return gather_rows(x, plan.out_rows), counts


def _v_only(inp: LayerInput, mask: Tensor | None, reused: bool, gen_lens: Tensor) -> Tensor | int:
    """Generated rows whose V this layer projected although it does not recompute them (per
    sample [B], or 0), given the layer's row mask [B, T] (None: every row recomputed) and each
    sample's generated length [B]."""
    if inp.gen_v is None:
        return 0
    if mask is None or not reused:
        return gen_lens  # the recomputed rows projected their V again: all of them were extra
    return gen_lens - mask[:, inp.P :].sum(-1)


def mask_to_rows(mask: Tensor, n: int | None = None) -> tuple[Tensor, Tensor]:
    """Row mask [B, T] -> ascending row indices [B, N] and counts [B]. Rows with fewer than N
    selected repeat their first index: recomputing a row twice writes the same values twice.
    N is the largest count; a plan that knows a bound passes it as `n` and spares a device-to-host
    sync. A mask that selects more than its bound is an error (raised on the CPU; a device-side
    assert on an accelerator), never a silent drop."""
    counts = mask.sum(-1)
    if n is None:
        n = int(counts.max())
    else:
        torch._assert_async((counts <= n).all(), "a plan selected more rows than its bound")
    order = mask.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[:, :n]  # [B, N]
    pad = torch.arange(n, device=mask.device) >= counts[:, None]
    return torch.where(pad, order[:, :1], order), counts


def _common_span(rows: Tensor, counts: Tensor) -> slice | None:
    """rows [B, N] from mask_to_rows: the slice they are when every sample selected the same N
    consecutive rows, else None (a host read of 2B + B numbers)."""
    N = rows.shape[1]
    if N == 0:
        return None
    first, last = rows[:, 0].tolist(), rows[:, -1].tolist()
    if len(set(first)) != 1 or last[0] - first[0] != N - 1 or len(set(last)) != 1:
        return None
    if not bool((counts == N).all()):
        return None
    return slice(first[0], first[0] + N)


def _positions_in(rows: Tensor, wanted: Tensor) -> tuple[Tensor, Tensor]:
    """For each wanted canvas row [B, M]: its index inside `rows` [B, N] and whether it is there."""
    match = rows[:, None, :] == wanted[:, :, None]  # [B, M, N]
    return match.int().argmax(-1), match.any(-1)

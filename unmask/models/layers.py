"""The transformer both families share (RMSNorm, RoPE, GQA attention, SwiGLU), cache-aware.

Family files (llada.py, dream.py) only map their Hub config keys and tensor names onto this.
Caching policy lives in the RowPlan the forward is given; this module knows no cache mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unmask.cache import Cache, LayerProbe, RowPlan


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
    """cos/sin [B, N, head_dim] for integer positions [B, N], computed in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos.device).float() / head_dim))
    freqs = pos.float()[..., None] * inv_freq  # [B, N, head_dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, N, Dh]; rotate-half (NeoX) layout, as both LLaDA and Dream use."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    out = xf * cos[:, None] + rotated * sin[:, None]
    return out.to(x.dtype)


def gather_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x [B, T, ...], rows [B, N] -> [B, N, ...]."""
    idx = rows.view(*rows.shape, *([1] * (x.dim() - 2))).expand(*rows.shape, *x.shape[2:])
    return x.gather(1, idx)


def scatter_rows(x: Tensor, rows: Tensor, src: Tensor) -> None:
    """In place: x[b, rows[b, n]] = src[b, n]."""
    idx = rows.view(*rows.shape, *([1] * (x.dim() - 2))).expand(*rows.shape, *x.shape[2:])
    x.scatter_(1, idx, src)


class Block(nn.Module):
    """One pre-norm transformer layer; computes any subset of rows against the full-canvas K/V."""

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

    def heads(self, t: Tensor, n: int) -> Tensor:
        B, N, _ = t.shape
        return t.view(B, N, n, self.a.head_dim).transpose(1, 2)  # [B, n, N, Dh]

    def attention(
        self,
        normed: Tensor,
        rope: tuple[Tensor, Tensor],
        k: Tensor,
        v: Tensor,
        key_mask: Tensor | None,
    ) -> Tensor:
        """Queries from `normed` [B, N, D] against K/V [B, Hkv, Tk, Dh]; returns [B, N, D]."""
        a = self.a
        q = apply_rope(self.heads(self.q_proj(normed), a.n_heads), *rope)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, Tk]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=a.n_kv_heads != a.n_heads
        )
        B, _, N, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(B, N, a.n_heads * a.head_dim))

    def keys(self, normed: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        return apply_rope(self.heads(self.k_proj(normed), self.a.n_kv_heads), *rope)

    def values(self, normed: Tensor) -> Tensor:
        return self.heads(self.v_proj(normed), self.a.n_kv_heads)

    def kv(self, normed: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.keys(normed, rope), self.values(normed)

    def mlp(self, h: Tensor) -> Tensor:
        n = self.mlp_norm(h)
        return self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], key_mask: Tensor | None) -> Tensor:
        """Plain full forward without a cache (training and the reference path)."""
        normed = self.attn_norm(x)
        k, v = self.kv(normed, rope)
        h = x + self.attention(normed, rope, k, v, key_mask)
        return h + self.mlp(h)


class Transformer(nn.Module):
    """Embedding, blocks, final norm, LM head. `forward`: training path; `run`: plan-driven."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.args = a
        self.embed = nn.Embedding(a.vocab_size, a.d_model)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
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
        plan: RowPlan,
        cache: Cache,
        out_rows: Tensor,
        need: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One plan-driven forward (1 NFE).

        canvas, pos [B, T]; out_rows [B, M] canvas rows whose final hidden states are returned;
        need [B, T] the rows among them that must be fresh (default: all of them). With a
        fixed-rows plan, an out row that is neither planned nor needed comes back as zeros.
        Returns hidden [B, M, D] and the rows recomputed per sample and layer [B, n_layers].
        """
        fixed = plan.fixed_rows()
        if fixed is not None:
            if need is None:
                need = _row_mask(out_rows, fixed.shape[1])
            return self._run_fixed(canvas, pos, key_mask, fixed | need, cache, out_rows)
        return self._run_layered(canvas, pos, key_mask, plan, cache, out_rows)

    def _run_fixed(self, canvas, pos, key_mask, mask, cache, out_rows):
        # The same rows at every layer: carry only those rows; everything else is read from K/V.
        rows, n = mask_to_rows(mask)
        rope = self.rope(gather_rows(pos, rows))
        x = self.embed(gather_rows(canvas, rows))  # [B, N, D]
        for i, layer in enumerate(self.layers):
            normed = layer.attn_norm(x)
            k, v = layer.kv(normed, rope)
            cache.write_kv(i, rows, k, v)
            h = x + layer.attention(normed, rope, cache.k[i], cache.v[i], key_mask)
            x = h + layer.mlp(h)
        where, found = _positions_in(rows, out_rows)
        hidden = gather_rows(x, where) * found[..., None]  # [B, M, D]
        return hidden, n[:, None].expand(-1, len(self.layers)).clone()

    def _run_layered(self, canvas, pos, key_mask, plan, cache, out_rows):
        # Per-layer row sets: carry the whole residual stream; rows a layer skips take its cached
        # attention and MLP contributions (the dLLM-Cache / Dynamic-dLLM feature cache).
        rope_all = self.rope(pos)
        x = self.embed(canvas)  # [B, T, D]
        # Rows per sample and layer stay on the device: no host sync inside the forward.
        counts = torch.zeros(x.shape[0], len(self.layers), dtype=torch.long, device=x.device)
        for i, layer in enumerate(self.layers):
            probe = LayerProbe(i, x, layer, rope_all, cache)
            mask = plan.rows(i, probe)
            if mask is None:
                cache.v_only += probe.v_only_rows(None)  # a signal computed before it chose
                normed = probe.normed
                k, v = probe.kv()
                cache.k[i].copy_(k)
                cache.v[i].copy_(v)
                attn = layer.attention(normed, rope_all, cache.k[i], cache.v[i], key_mask)
                h = x + attn
                mlp = layer.mlp(h)
                cache.write_features(i, None, attn, mlp)
                counts[:, i] = x.shape[1]
                x = h + mlp
                continue
            rows, counts[:, i] = mask_to_rows(mask, plan.count(i))
            P = probe.refresh_v_from
            if P is not None:  # fresh V of every generated row, recomputed or not
                cache.v[i][:, :, P:] = probe.gen_values(P)
            normed = gather_rows(probe.normed, rows)
            rope = (gather_rows(rope_all[0], rows), gather_rows(rope_all[1], rows))
            k, v = probe.kv_rows(rows, normed, rope)
            cache.v_only += probe.v_only_rows(mask)
            cache.write_kv(i, rows, k, v)
            attn = layer.attention(normed, rope, cache.k[i], cache.v[i], key_mask)
            h = gather_rows(x, rows) + attn
            mlp = layer.mlp(h)
            cache.write_features(i, rows, attn, mlp)
            x = x + cache.attn[i] + cache.mlp[i]
        return gather_rows(x, out_rows), counts


def mask_to_rows(mask: Tensor, n: int | None = None) -> tuple[Tensor, Tensor]:
    """Row mask [B, T] -> ascending row indices [B, N] and counts [B]. Rows with fewer than N
    selected repeat their first index: recomputing a row twice writes the same values twice.
    N is the largest count; a plan that knows it passes `n` and spares a device-to-host sync."""
    counts = mask.sum(-1)
    if n is None:
        n = int(counts.max())
    order = mask.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[:, :n]  # [B, N]
    pad = torch.arange(n, device=mask.device) >= counts[:, None]
    return torch.where(pad, order[:, :1], order), counts


def _row_mask(rows: Tensor, T: int) -> Tensor:
    mask = torch.zeros(rows.shape[0], T, dtype=torch.bool, device=rows.device)
    return mask.scatter_(1, rows, True)


def _positions_in(rows: Tensor, wanted: Tensor) -> tuple[Tensor, Tensor]:
    """For each wanted canvas row [B, M]: its index inside `rows` [B, N] and whether it is there."""
    match = rows[:, None, :] == wanted[:, :, None]  # [B, M, N]
    return match.int().argmax(-1), match.any(-1)

"""The cache side of a step: the full-canvas buffers, one handle per layer, and the signals a
per-layer plan may read about a layer's input before choosing its rows.

Which rows to pick is policy business (policies/refresh.py); the runner (models/layers.py)
asks each row's plan at each layer and writes through the layer's handle.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from unmask.models.layers import Layer


class Cache:
    """Buffers as long as the whole canvas, written by row index.

    k, v:      [n_layers, B, Hkv, T, Dh]  post-RoPE keys and values of every canvas row
    attn, mlp: [n_layers, B, T, D]        residual contributions, allocated on first use
    """

    def __init__(
        self,
        n_layers: int,
        B: int,
        n_kv_heads: int,
        T: int,
        head_dim: int,
        d_model: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        self.k = torch.zeros(n_layers, B, n_kv_heads, T, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.attn: Tensor | None = None
        self.mlp: Tensor | None = None
        self.shape_features = (n_layers, B, T, d_model)
        self.layers = [LayerCache(self, i) for i in range(n_layers)]
        self.rope: tuple[Tensor, Tensor] | None = None  # the request's RoPE tables [B, T, Dh]
        self.graphs = None  # a one-row request's replayable steps (models/graphs.StepGraphs)
        # (position x layer) cells whose V alone was projected (the V-proxy policies' similarity
        # signal and fresh-V refresh) on top of the recomputed rows, per sample, since last read.
        # Kept on the device (no sync per layer); the loop reads it once per step.
        self.v_only = torch.zeros(B, dtype=torch.long, device=device)

    def take_v_only(self) -> Tensor:
        """V-only cells counted since the last call [B] (on the cache's device), and reset."""
        out, self.v_only = self.v_only, torch.zeros_like(self.v_only)
        return out

    def features(self) -> tuple[Tensor, Tensor]:
        if self.attn is None:
            parent = getattr(self, "_parent", None)
            if parent is not None:  # a row's view: the buffers live in the batch's cache
                cache, b, lo, hi = parent
                A, M = cache.features()
                self.attn, self.mlp = A[:, b : b + 1, lo:hi], M[:, b : b + 1, lo:hi]
            else:
                shape, k = self.shape_features, self.k
                self.attn = torch.zeros(shape, dtype=k.dtype, device=k.device)
                self.mlp = torch.zeros_like(self.attn)
        return self.attn, self.mlp

    def row_view(self, b: int, lo: int, hi: int) -> Cache:
        """Row b's columns [lo, hi) as a one-row cache sharing this one's storage: a forward of
        that row alone, in its own coordinates, reads and writes the batch's buffers."""
        view = Cache.__new__(Cache)
        view.k = self.k[:, b : b + 1, :, lo:hi]
        view.v = self.v[:, b : b + 1, :, lo:hi]
        view.attn = None if self.attn is None else self.attn[:, b : b + 1, lo:hi]
        view.mlp = None if self.mlp is None else self.mlp[:, b : b + 1, lo:hi]
        n_layers, _, _, D = self.shape_features
        view.shape_features = (n_layers, 1, hi - lo, D)
        view.layers = [LayerCache(view, i) for i in range(n_layers)]
        view.rope = None
        view.graphs = None
        view.v_only = torch.zeros(1, dtype=torch.long, device=self.k.device)
        view._parent = (self, b, lo, hi)
        return view


class LayerCache:
    """One layer's slice of the cache: K/V of every canvas row, and the feature buffers."""

    def __init__(self, cache: Cache, layer: int):
        self.cache = cache
        self.layer = layer

    @property
    def k(self) -> Tensor:
        return self.cache.k[self.layer]  # [B, Hkv, T, Dh]

    @property
    def v(self) -> Tensor:
        return self.cache.v[self.layer]

    def update(self, rows: Tensor | slice | None, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, Hkv, N, Dh] of canvas rows [B, N] (a slice: the same span in every row;
        None: every row, in order); returns the layer's full K, V to attend to."""
        K, V = self.k, self.v
        if rows is None:
            K.copy_(k)
            V.copy_(v)
        elif isinstance(rows, slice):
            K[:, :, rows] = k
            V[:, :, rows] = v
        else:
            idx = rows[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            K.scatter_(2, idx, k)
            V.scatter_(2, idx, v)
        return K, V

    def write_features(self, rows: Tensor | None, attn: Tensor, mlp: Tensor) -> None:
        """attn, mlp [B, N, D] for rows [B, N] (None: every row)."""
        A, M = (f[self.layer] for f in self.cache.features())
        if rows is None:
            A.copy_(attn)
            M.copy_(mlp)
            return
        idx = rows[:, :, None].expand(-1, -1, attn.shape[-1])
        A.scatter_(1, idx, attn)
        M.scatter_(1, idx, mlp)

    def contributions(self) -> tuple[Tensor, Tensor]:
        A, M = self.cache.features()
        return A[self.layer], M[self.layer]  # [B, T, D] each


class LayerInput:
    """A layer's input for the whole batch and what is derived from it lazily: the normalised
    input, and V of the generated rows (projected once, shared by the signals, the fresh-V
    refresh and the recomputed rows)."""

    def __init__(self, x: Tensor, layer: Layer, handle: LayerCache, gen_start: int):
        self.x = x  # [B, T, D] residual stream entering the layer
        self.layer = layer
        self.handle = handle
        self.P = gen_start
        self.gen_v: Tensor | None = None  # [B, Hkv, G, Dh] once projected

    @cached_property
    def normed(self) -> Tensor:
        return self.layer.attn_norm(self.x)  # [B, T, D]

    def gen_values(self) -> Tensor:
        if self.gen_v is None:
            self.gen_v = self.layer.values(self.normed[:, self.P :])
        return self.gen_v

    def signals(self, b: int, warm: bool, gen_len: int | None = None) -> LayerSignals:
        return LayerSignals(self, b, warm, gen_len)


class LayerSignals:
    """What one row's plan may read about a layer's input before choosing its rows, over that
    row's `gen_len` generated rows."""

    def __init__(self, inp: LayerInput, b: int, warm: bool, gen_len: int | None = None):
        self._inp = inp
        self._b = b
        self._G = inp.x.shape[1] - inp.P if gen_len is None else gen_len
        self.layer = inp.handle.layer
        self.warm = warm  # this row's cache holds an earlier step (False on its cold start)

    def gen_input(self) -> Tensor:
        """[1, G, D] the normalised layer input of the generated rows (Dynamic-dLLM's x proxy)."""
        b, P = self._b, self._inp.P
        return self._inp.normed[b : b + 1, P : P + self._G]

    def v_moved(self) -> Tensor:
        """[1, G] 1 - cos(fresh V, cached V) of every generated row, heads concatenated (the V
        proxy of dLLM-Cache and Dynamic-dLLM's released code)."""
        b, P, G = self._b, self._inp.P, self._G
        fresh = _flat_heads(self._inp.gen_values()[b : b + 1, :, :G])
        cached = _flat_heads(self._inp.handle.v[b : b + 1, :, P : P + G])
        return 1 - torch.cosine_similarity(fresh, cached, dim=-1)


def _flat_heads(v: Tensor) -> Tensor:
    """[B, H, N, Dh] -> [B, N, H * Dh]: one vector per row, all heads concatenated."""
    B, H, N, Dh = v.shape
    return v.transpose(1, 2).reshape(B, N, H * Dh)

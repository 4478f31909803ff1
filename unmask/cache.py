"""The full-canvas cache (K/V per layer, plus optional feature buffers) and the RowPlan protocol.

A RefreshPolicy turns its state into a RowPlan each step; the model asks the plan, layer by layer,
which rows to recompute. Which rows to pick is policy business and lives in policies/refresh.py.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from unmask.models.layers import Block


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
        self.warm = False  # every row of every layer has been written at least once
        # (position x layer) cells whose V alone was projected (the V-proxy policies' similarity
        # signal and fresh-V refresh) on top of the recomputed rows, per sample, since last read.
        # Kept on the device (no sync per layer); the loop reads it once per step.
        self.v_only = torch.zeros(B, dtype=torch.long, device=device)

    def take_v_only(self) -> Tensor:
        """V-only cells counted since the last call [B] (on the cache's device), and reset."""
        out, self.v_only = self.v_only, torch.zeros_like(self.v_only)
        return out

    def write_kv(self, layer: int, rows: Tensor, k: Tensor, v: Tensor) -> None:
        """k, v [B, Hkv, N, Dh] for canvas rows [B, N]."""
        idx = rows[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        self.k[layer].scatter_(2, idx, k)
        self.v[layer].scatter_(2, idx, v)

    def write_features(self, layer: int, rows: Tensor | None, attn: Tensor, mlp: Tensor) -> None:
        """attn, mlp [B, N, D] for rows [B, N] (None: every row)."""
        if self.attn is None:
            self.attn = torch.zeros(self.shape_features, dtype=attn.dtype, device=attn.device)
            self.mlp = torch.zeros_like(self.attn)
        if rows is None:
            self.attn[layer].copy_(attn)
            self.mlp[layer].copy_(mlp)
            return
        idx = rows[:, :, None].expand(-1, -1, attn.shape[-1])
        self.attn[layer].scatter_(1, idx, attn)
        self.mlp[layer].scatter_(1, idx, mlp)


class LayerProbe:
    """What a plan may see before choosing a layer's rows: the layer input and lazily derived
    views of it (normalised input, V of every row), reused by the layer once computed."""

    def __init__(
        self, layer: int, x: Tensor, block: Block, rope: tuple[Tensor, Tensor], cache: Cache
    ):
        self.layer = layer
        self.x = x  # [B, T, D] residual stream entering the layer
        self.block = block
        self.rope = rope
        self.cache = cache
        self._values: Tensor | None = None
        self._gen_values: Tensor | None = None
        # First canvas row whose V the layer overwrites with fresh gen_values() even where it
        # does not recompute the row (both released codes refresh V of every generated row).
        self.refresh_v_from: int | None = None
        self.cold = False  # the cache is empty: a signal measured against it means nothing
        # Set by a plan that knows its rows hold no prompt row (True) or may (False); None: the
        # layer reads the rows to find out (a device-to-host sync).
        self.gen_only: bool | None = None
        self._v_reused = False  # kv_rows took the recomputed rows' V from gen_values()

    @cached_property
    def normed(self) -> Tensor:
        return self.block.attn_norm(self.x)  # [B, T, D]

    def values(self) -> Tensor:
        """V of every row [B, Hkv, T, Dh] (a full layer's)."""
        if self._values is None:
            self._values = self.block.values(self.normed)
        return self._values

    def gen_values(self, P: int) -> Tensor:
        """V of the generated rows P.. only [B, Hkv, T - P, Dh]: the V-proxy policies' signal
        and the fresh V they write back; prompt rows are never projected for it."""
        if self._gen_values is None:
            self._gen_values = self.block.values(self.normed[:, P:])
        return self._gen_values

    def v_only_rows(self, mask: Tensor | None) -> Tensor | int:
        """Generated rows whose V this layer projected although it does not recompute them (per
        sample [B], or 0), given the layer's row mask [B, T] (None: every row recomputed)."""
        if self._gen_values is None:
            return 0
        G = self._gen_values.shape[2]
        if mask is None or not self._v_reused:
            return G  # the recomputed rows projected their V again: all of them were extra
        return G - mask[:, self.x.shape[1] - G :].sum(-1)

    def kv(self) -> tuple[Tensor, Tensor]:
        return self.block.keys(self.normed, self.rope), self.values()

    def kv_rows(
        self, rows: Tensor, normed: Tensor, rope: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """K and V of the recomputed rows [B, N]; V is taken from gen_values() when it holds them
        all (no prompt row among them), so no row's V is projected twice."""
        k = self.block.keys(normed, rope)
        if self._gen_values is not None:
            P = self.x.shape[1] - self._gen_values.shape[2]
            gen_only = self.gen_only
            if gen_only is None:
                gen_only = bool((rows >= P).all())
            if gen_only:
                idx = (rows - P)[:, None, :, None].expand(
                    -1, self._gen_values.shape[1], -1, self._gen_values.shape[3]
                )
                self._v_reused = True
                return k, self._gen_values.gather(2, idx)
        return k, self.block.values(normed)


class RowPlan(Protocol):
    """Which canvas rows each layer recomputes at this step."""

    def fixed_rows(self) -> Tensor | None:
        """[B, N] if every layer recomputes the same rows (the forward then carries only those);
        None if rows differ per layer, in which case `rows` is asked at every layer."""
        ...

    def rows(self, layer: int, probe: LayerProbe) -> Tensor | None:
        """[B, T] row mask for this layer, or None for every row."""
        ...

    def count(self, layer: int) -> int | None:
        """The largest number of rows `rows` selects for one sample at this layer, when the plan
        knows it without reading the mask (it then need not be synced to the host); else None."""
        ...

"""The step contract between the decoding loop, the policies and the model runner.

- `RowView`: what a policy sees of its row of a request before each step (read-only to it).
  Every row of a batch has its own view, its own policy instances and its own random stream,
  so a row decodes the same whatever else shares its batch.
- `RowPlan` / `LayerRows`: what a refresh policy answers for its row: the rows recomputed at
  every layer (a fixed plan) or, layer by layer, a `LayerRows` chosen from the `LayerSignals`
  the cache side serves (cache.py).
- `StepPlan`: the batch's plans plus the decision rows, made before the forward and consumed
  by the runner (`Transformer.run`).

See docs/design.md for how a step flows through these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from unmask.cache import LayerSignals
    from unmask.policies.blocks import Block


@dataclass
class RowState:
    """The loop's own record of one row (policies see it through a RowView)."""

    canvas: Tensor  # [1, T] a view of its batch canvas row; generated columns start at gen_start
    gen_start: int
    gen_len: int
    block_len: int  # the request's default block length
    n_layers: int
    mask_id: int
    logit_shift: bool  # model arg: position p is predicted from the output at p-1 (Dream)
    block_head_first: bool  # model arg: a block's first step reveals only its first position
    model_dtype: torch.dtype  # the weights' and activations' dtype (logits arrive in float32)
    temperature: float
    generator: torch.Generator  # this row's random stream, seeded from the request
    step: int = 0
    nfe: int = 0  # forwards this row has taken part in
    block: Block | None = None
    step_in_block: int = 0
    logits: Tensor | None = None  # [1, L, V] this step's logits of the block's positions
    gen_logits: Tensor | None = None  # [1, G, V] of every generated position, when the plan asked


class RowView:
    """One row of a request, as its policies see it: tensors keep a batch dim of 1, so policy
    code reads [B, ...] shapes with B = 1. Attributes cannot be set; tensors are not to be
    written (the loop alone writes the canvas)."""

    __slots__ = ("_s",)

    def __init__(self, state: RowState):
        object.__setattr__(self, "_s", state)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"a policy's view of its row is read-only (tried to set {key!r})")

    canvas = property(lambda self: self._s.canvas, doc="[1, T] token ids")
    gen_start = property(lambda self: self._s.gen_start, doc="first generated column")
    gen_len = property(lambda self: self._s.gen_len)
    block_len = property(lambda self: self._s.block_len, doc="the request's default block length")
    n_layers = property(lambda self: self._s.n_layers)
    mask_id = property(lambda self: self._s.mask_id)
    logit_shift = property(lambda self: self._s.logit_shift, doc="model arg (Dream: True)")
    block_head_first = property(
        lambda self: self._s.block_head_first, doc="model arg (Dream: True); see ModelArgs"
    )
    model_dtype = property(lambda self: self._s.model_dtype, doc="the model's compute dtype")
    temperature = property(lambda self: self._s.temperature)
    step = property(lambda self: self._s.step, doc="steps this row has taken")
    nfe = property(lambda self: self._s.nfe, doc="forwards so far (incremented after each)")
    block = property(lambda self: self._s.block, doc="the current block span")
    step_in_block = property(lambda self: self._s.step_in_block)
    logits = property(lambda self: self._s.logits, doc="[1, L, V] this step's block logits")
    gen_logits = property(lambda self: self._s.gen_logits, doc="[1, G, V] when wanted")

    @property
    def generators(self) -> list[torch.Generator]:
        """This row's random stream, as a list indexed like the batch dim (one entry)."""
        return [self._s.generator]

    @property
    def batch(self) -> int:
        return 1

    @property
    def masked(self) -> Tensor:
        return self._s.canvas == self._s.mask_id  # [1, T]

    def cols(self, block: Block) -> slice:
        """Canvas columns of a block span."""
        return slice(self._s.gen_start + block.start, self._s.gen_start + block.end)


@dataclass(frozen=True)
class LayerRows:
    """One layer's rows for one row of the batch.

    mask:    [1, T] rows recomputed (None: every row)
    bound:   at most this many rows are selected, when the plan knows it without reading the
             mask (the runner then needs no device-to-host sync); exceeding it is an error
    gen_only: True when no prompt row is among them (None: the runner checks)
    fresh_v: V of every generated row is overwritten with fresh values, recomputed or not (both
             dLLM-Cache's and Dynamic-dLLM's released code keep the V they project anyway)
    """

    mask: Tensor | None
    bound: int | None = None
    gen_only: bool | None = None
    fresh_v: bool = False


EVERY_ROW = LayerRows(None)


class RowPlan(Protocol):
    """A refresh policy's plan for its row at this step."""

    def fixed_rows(self) -> Tensor | None:
        """[1, T] if every layer recomputes the same rows (the runner then carries only those);
        None if rows differ per layer, in which case `layer_rows` is asked at every layer."""
        ...

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        """This layer's rows, chosen from what the cache side serves about its input."""
        ...


@dataclass
class StepPlan:
    """The batch's step, made before the forward: per row its plan (in batch columns); the
    decision rows whose final hidden states come back; which of them must be fresh; the
    non-padding columns; where generated regions start and how long each is."""

    rows: list[RowPlan]  # per batch row
    out_rows: Tensor  # [B, M] canvas rows whose final hidden states are returned
    need: Tensor  # [B, T] rows among them that must be recomputed at every layer
    valid: Tensor | None = None  # [B, T] columns that are not padding (None: all are)
    gen_start: int = 0  # the batch column where every row's generated region starts
    gen_lens: list[int] | None = None  # each row's generated length (None: all to the end)

    @property
    def batch(self) -> int:
        return len(self.rows)

"""Replayed fixed-rows forwards: CUDA graphs of a request's one-row steps.

On a GPU a cached step of a large model is bound by launches, not by its rows: a 32-row step of
an 8B model issues about 50 small kernels per layer from Python. A CUDA graph records those
launches once and replays them in one call. Each request's cache (`Cache.graphs`) keeps one graph
per shape of its fixed-rows forwards, keyed by (rows N, decision rows M): Fast-dLLM's dual cache
needs two, the block-start full forward (N = T) and the block step (N = block length).

A graph reads fixed addresses, so the step is written for them: the canvas and the cache are the
request's own (the loop edits the canvas in place), the rows and decision rows are copied into
static index buffers before each replay, and the rows go through the layers by index (gather and
scatter) rather than as a slice. Gathering a span gives the same values as slicing it and every
matmul sees the same shapes, so a replay computes the eager step's bits
(`tests/test_graphs.py` checks tokens, NFE and cells against eager decoding).

The first forward of each shape runs eagerly, on a side stream as capture requires, and serves as
that step's result; the graph is captured right after it and replayed from the next step on.
Without CUDA (`capture=False`), "replay" re-runs the recorded step on the static buffers: the same
bookkeeping, used by the CPU tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class _StaticPlan:
    out_rows: Tensor  # [1, M] the decision rows, a static buffer


@dataclass
class _Entry:
    rows: Tensor  # [1, N] static copy of the rows recomputed
    out_rows: Tensor  # [1, M] static copy of the decision rows
    hidden: Tensor | None = None  # [1, M, D] the captured output
    graph: Any = None  # torch.cuda.CUDAGraph, or None (CPU: re-run)


class StepGraphs:
    """One request's replayable fixed-rows forwards (batch 1), one per (N, M)."""

    def __init__(self, capture: bool):
        self.capture = capture
        self.entries: dict[tuple[int, int], _Entry] = {}
        self.captured = 0  # graphs recorded
        self.replays = 0  # steps served by a replay
        self._pool = torch.cuda.graph_pool_handle() if capture else None

    def run(self, model, canvas: Tensor, plan, cache, rows: Tensor) -> Tensor:
        """hidden [1, M, D] of plan.out_rows after recomputing `rows` [1, N] of the canvas: the
        same as model._run_fixed(..., gather=True), by replay when this shape was seen."""
        key = (rows.shape[1], plan.out_rows.shape[1])
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = _Entry(rows.clone(), plan.out_rows.clone())
            return self._first(model, canvas, cache, e)
        e.rows.copy_(rows)
        e.out_rows.copy_(plan.out_rows)
        self.replays += 1
        if e.graph is None:  # CPU: the recorded step, run again on the static buffers
            return self._step(model, canvas, cache, e)
        e.graph.replay()
        return e.hidden.clone()  # the next replay overwrites the graph's output

    def _step(self, model, canvas, cache, e: _Entry) -> Tensor:
        plan = _StaticPlan(e.out_rows)
        return model._run_fixed(canvas, None, plan, cache, e.rows, None, gather=True)[0]

    def _first(self, model, canvas, cache, e: _Entry) -> Tensor:
        if not self.capture:
            return self._step(model, canvas, cache, e)
        # Capture needs a warm-up outside the capturing stream; that eager run is this step's
        # forward (it writes the same K/V the step would), and capture itself executes nothing.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            hidden = self._step(model, canvas, cache, e)
        torch.cuda.current_stream().wait_stream(side)
        hidden = hidden.clone()  # on the main stream, from the side stream's memory
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            e.hidden = self._step(model, canvas, cache, e)
        e.graph = graph
        self.captured += 1
        return hidden

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

from unmask.engine import Engine, Row, eos_exit  # noqa: F401  (eos_exit: part of this API)
from unmask.models.load import Loaded
from unmask.policies.blocks import Block
from unmask.recipe import Recipe

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
    """Decode `prompts` as one batch. Every row runs its own copy of the recipe's policies and
    its own random stream, seeded alike, so a prompt decodes the same alone or in any batch;
    the rows share each forward (engine.py)."""
    a = lm.args
    device = next(lm.model.parameters()).device
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    G = next(n for n in (recipe.gen_len, gen_len, DEFAULT_GEN_LEN) if n is not None)
    if G <= 0:
        raise ValueError(f"gen_len must be > 0, got {G}")
    L = DEFAULT_BLOCK_LEN if block_len is None else block_len
    if L <= 0:
        raise ValueError(f"block_len must be > 0, got {L}")
    ids = encode_prompts(lm, prompts, chat)
    P = max(len(i) for i in ids)
    if P + G > a.max_seq_len:
        raise ValueError(
            f"prompt ({P}) + gen_len ({G}) = {P + G} exceeds the model's {a.max_seq_len}"
        )
    _sync(device)
    t0 = time.perf_counter()
    engine = Engine(lm)
    rows = [engine.add(i, recipe, G, L) for i in ids]
    while True:
        events = engine.step(t0)
        if all(r.finished for r in rows):
            _sync(device)
            wall = time.perf_counter() - t0
            events[-1].outputs = [output(lm, r, wall, stop) for r in rows]
            yield from events
            return
        yield from events


def output(lm: Loaded, row: Row, wall: float, stop: list[str] | None) -> Output:
    """A finished row's text (cut at its first EOS/EOT and at `stop` strings) and metrics."""
    ids = row.gen_ids
    stops = set(lm.stop_ids)
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    answer = ids if end is None else ids[: end + 1]
    text = lm.tokenizer.decode(ids if end is None else ids[:end], skip_special_tokens=True)
    for s in stop or ():
        text = text.split(s, 1)[0]
    m = Metrics(
        nfe=row.state.nfe,
        rows=row.cells,
        n_layers=lm.args.n_layers,
        prompt_tokens=row.P,
        answer_tokens=len(answer),
        all_tokens=len(ids),
        wall_s=wall,
        v_only_rows=row.v_only,
        v_cost=v_cost(lm.args),
    )
    return Output(text=text.strip(), ids=ids, metrics=m)


def v_cost(a) -> float:
    """What projecting V for one row costs against recomputing the row (its weight matmuls:
    Q, K, V, O, gate, up, down), from the model's shapes; attention scores are left out."""
    d, hd = a.d_model, a.head_dim
    v = d * a.n_kv_heads * hd
    row = 2 * d * a.n_heads * hd + 2 * v + 3 * d * a.mlp_hidden
    return v / row


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

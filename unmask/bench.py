"""Side-by-side measurement: every recipe on the same samples, interleaved, into per-sample
records, summary rows, a printed table and a JSON record. Plotting lives in plots.py."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from unmask.generate import DEFAULT_GEN_LEN, StepEvent, encode_prompts, generate, stream_generate
from unmask.models.load import Loaded
from unmask.recipe import Recipe
from unmask.tasks import Sample, Task

REFERENCES = ("vanilla", "fast-dllm")  # speedups are reported against these when present


@dataclass
class Record:
    """One sample decoded by one recipe."""

    recipe: str
    index: int
    prompt: str
    answer: str  # the generated text, cut at EOS and at the task's stop strings
    reference: str  # the sample's full reference
    target: str  # the sample's final answer
    extracted: str | None  # the final answer the task found in `answer`
    correct: bool
    nfe: int
    rows: int
    ar_floor: int
    answer_tokens: int
    all_tokens: int
    wall_s: float
    details: dict[str, Any] = field(default_factory=dict)  # task-specific grading fields
    cost_rows: float = 0.0  # rows + the V-only projections weighted by their cost (Metrics)


def run_samples(
    lm: Loaded,
    task: Task,
    recipe: Recipe,
    samples: list[Sample],
    start: int = 0,
    batch: int = 1,
    chat: bool = True,
) -> list[Record]:
    """Decode `samples` in batches; with batch > 1 each sample is charged wall time / batch."""
    out = []
    for lo in range(0, len(samples), batch):
        chunk = samples[lo : lo + batch]
        outs = generate(
            lm,
            [s.prompt for s in chunk],
            recipe,
            gen_len=task.gen_len,
            block_len=task.block_len,
            chat=chat,
            stop=list(task.stop) or None,
        )
        for j, (s, o) in enumerate(zip(chunk, outs, strict=True)):
            m = o.metrics
            grade = task.grade(s, o.text)
            out.append(
                Record(
                    recipe=recipe.name,
                    index=start + lo + j,
                    prompt=s.prompt,
                    answer=o.text,
                    reference=s.reference,
                    target=s.answer,
                    extracted=grade.pop("extracted", None),
                    correct=bool(grade.pop("correct")),
                    nfe=m.nfe,
                    rows=m.rows,
                    ar_floor=m.ar_floor,
                    answer_tokens=m.answer_tokens,
                    all_tokens=m.all_tokens,
                    wall_s=m.wall_s / len(chunk),
                    details=grade,
                    cost_rows=m.cost_rows,
                )
            )
    return out


def accuracy(records: list[Record]) -> float:
    """Fraction of records scored correct (0 for none)."""
    return sum(r.correct for r in records) / max(1, len(records))


def summarize(recipe: Recipe, records: list[Record]) -> dict:
    n = len(records)
    wall = sum(r.wall_s for r in records)
    summary = {
        "recipe": recipe.name,
        "spec": recipe.spec,
        "accuracy": accuracy(records),
        "n": n,
        "nfe_per_sample": sum(r.nfe for r in records) / n,
        "rows_per_sample": sum(r.rows for r in records) / n,
        # Parallelism: generated positions per forward, and answer tokens (up to EOS) per forward,
        # since EOS padding, revealed in bulk, inflates the first; and how much of gen_len the
        # answer fills.
        "positions_per_nfe": sum(r.all_tokens for r in records)
        / max(1, sum(r.nfe for r in records)),
        "answer_tokens_per_nfe": (
            sum(r.answer_tokens for r in records) / max(1, sum(r.nfe for r in records))
        ),
        "answer_fill": sum(r.answer_tokens / max(1, r.all_tokens) for r in records) / n,
        "rows_over_ar_floor": sum(r.rows for r in records) / sum(r.ar_floor for r in records),
        # the same with the V-only projections of the V-proxy policies counted at their cost
        "cost_over_ar_floor": sum(r.cost_rows for r in records) / sum(r.ar_floor for r in records),
        "answer_tokens_per_s": sum(r.answer_tokens for r in records) / wall,
        "all_tokens_per_s": sum(r.all_tokens for r in records) / wall,
        "wall_s": wall,
    }
    # A task's other boolean judgements (gsm8k: strict_match, flexible_extract) become rates.
    for key, value in records[0].details.items():
        if isinstance(value, bool):
            summary[key] = sum(bool(r.details.get(key)) for r in records) / n
    return summary


def fit_shots(
    lm: Loaded, task: Task, recipe: Recipe, n: int, chat: bool = True, start: int = 0
) -> int | None:
    """Lower `task.shots` until test prompts start..start+n plus the generated region fit the
    model's context (lm-eval would cut the prompt's start instead). Returns the new shot count
    when it had to change, None when the prompts fit as they are; raises ValueError when even
    zero-shot prompts do not fit."""
    gen_len = next(g for g in (recipe.gen_len, task.gen_len, DEFAULT_GEN_LEN) if g is not None)
    budget = lm.args.max_seq_len - gen_len
    first = task.shots
    while True:
        prompts = [s.prompt for s in task.samples("test", n, start=start)]
        longest = max((len(ids) for ids in encode_prompts(lm, prompts, chat)), default=0)
        if longest <= budget:
            return None if task.shots == first else task.shots
        if task.shots == 0:
            task.shots = first
            raise ValueError(
                f"{task.name}: a {longest}-token prompt plus gen_len {gen_len} exceeds the "
                f"model's context of {lm.args.max_seq_len}; lower --gen-len"
            )
        task.shots -= 1


def trace(
    lm: Loaded, task: Task, recipe: Recipe, sample: Sample, chat: bool = True
) -> list[StepEvent]:
    """Every StepEvent of one sample's decoding (for the step plots); untimed."""
    return list(
        stream_generate(
            lm,
            sample.prompt,
            recipe,
            gen_len=task.gen_len,
            block_len=task.block_len,
            chat=chat,
            stop=list(task.stop) or None,
        )
    )


def bench(
    lm: Loaded,
    task: Task,
    recipes: list[Recipe],
    n: int,
    warmup: int = 1,
    progress: bool = True,
    chat: bool = True,
    start: int = 0,
    on_record: Callable[[Record], None] | None = None,
    shard: tuple[int, int] | None = None,
    tally: Callable[[str], int] | None = None,
) -> tuple[list[dict], list[Record], bool]:
    """Every recipe on the same n test samples (from index `start`), in interleaved order so
    that machine noise hits all alike, after `warmup` untimed samples per recipe. Each record
    goes to `on_record` as soon as it is measured. An interrupt (Ctrl-C) ends the run early:
    the rows then summarise the samples every recipe finished, and the flag returned is True
    (partial). `shard` (rank, size): only samples i with i % size == rank, all recipes of a
    sample still interleaved on this rank (data-parallel runs gather the records and call
    `summaries`). `tally(recipe)`, called once per sample and recipe decoded here, returns how
    many that recipe has finished on all ranks: the bars then show the whole run."""
    samples = task.samples("test", n, start=start)
    index = list(range(len(samples)))
    if shard is not None:
        index = [i for i in index if i % shard[1] == shard[0]]
    for recipe in recipes:
        for s in task.samples("test", warmup, start=start + n) or samples[:warmup]:
            generate(
                lm, s.prompt, recipe, gen_len=task.gen_len, block_len=task.block_len, chat=chat
            )
    records: dict[str, list[Record]] = {r.name: [] for r in recipes}
    # One bar per recipe (they advance together: the order is interleaved).
    width = max(len(r.name) for r in recipes)
    bars = {
        r.name: tqdm(
            total=len(samples) if tally else len(index),
            desc=r.name.ljust(width),
            unit="sample",
            position=i,
            disable=not progress,
        )
        for i, r in enumerate(recipes)
    }
    done, partial = 0, False
    try:
        for k, i in enumerate(index):
            for recipe in recipes:
                new = run_samples(lm, task, recipe, [samples[i]], start=start + i, chat=chat)
                records[recipe.name] += new
                for r in new if on_record else ():
                    on_record(r)
                bar = bars[recipe.name]
                acc = f"{accuracy(records[recipe.name]):.3f}"
                bar.set_postfix({"acc" if tally is None else "acc here": acc}, refresh=False)
                if tally is None:
                    bar.update(1)
                else:
                    bar.n = tally(recipe.name)
                    bar.refresh()
            done = k + 1
    except KeyboardInterrupt:
        partial = True
    finally:
        for bar in bars.values():
            bar.close()
    kept = [x for r in recipes for x in records[r.name][:done]]
    return (summaries(recipes, kept) if done else []), kept, partial


def summaries(recipes: list[Recipe], records: list[Record]) -> list[dict]:
    """One summary row per recipe from its records, with speedups against the references
    measured on the same samples."""
    rows = [summarize(r, [x for x in records if x.recipe == r.name]) for r in recipes]
    for ref in REFERENCES:
        base = next((r for r in rows if r["recipe"] == ref), None)
        for r in rows:
            key = "speedup_vs_" + ref.replace("-", "_")
            r[key] = r["answer_tokens_per_s"] / base["answer_tokens_per_s"] if base else None
    return rows


def machine(device: torch.device) -> str:
    """The hardware a run used: the GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads (CPU)"


def table(rows: list[dict]) -> str:
    cols = [
        ("recipe", "recipe", "{}"),
        ("acc", "accuracy", "{:.3f}"),
        ("nfe/s", "nfe_per_sample", "{:.1f}"),
        ("pos/F", "positions_per_nfe", "{:.1f}"),
        ("ans/F", "answer_tokens_per_nfe", "{:.1f}"),
        ("rows/s", "rows_per_sample", "{:.0f}"),
        ("rows/AR", "rows_over_ar_floor", "{:.2f}"),
        ("+V/AR", "cost_over_ar_floor", "{:.2f}"),
        ("ans tok/s", "answer_tokens_per_s", "{:.1f}"),
        ("all tok/s", "all_tokens_per_s", "{:.1f}"),
        ("x vanilla", "speedup_vs_vanilla", "{:.2f}"),
        ("x fast-dllm", "speedup_vs_fast_dllm", "{:.2f}"),
        ("wall s", "wall_s", "{:.1f}"),
    ]
    return "\n".join(grid(cols, rows))


def grid(cols: list[tuple[str, str, str]], rows: list[dict]) -> list[str]:
    """Text table lines for (header, key, format) columns: a rule under the header, the first
    column left-aligned and the rest right-aligned, "-" for a missing value."""
    cells = [[h for h, _, _ in cols]]
    for r in rows:
        cells.append(["-" if r.get(k) is None else f.format(r[k]) for _, k, f in cols])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = [
        "  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i]) for i in range(len(c)))
        for c in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def record_dicts(records: list[Record]) -> list[dict]:
    """Flat dicts for JSONL: a task's grading details sit beside the common fields."""
    out = []
    for r in records:
        d = asdict(r)
        details = d.pop("details")
        out.append({**d, **details})
    return out

"""PNG plots: the accuracy / speed Pareto picture of a bench run, and two per-step pictures of one
decoding (candidate confidence per position, rows recomputed per layer), from its StepEvents.

Reads the JSON bench.py writes and the StepEvents stream_generate yields; never runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap, PowerNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import (
    FuncFormatter,  # noqa: E402
    MaxNLocator,  # noqa: E402
)

from unmask.generate import StepEvent  # noqa: E402
from unmask.outputs import save_figure  # noqa: E402

MAX_TOKEN_LABELS = 64  # beyond this many positions the y axis shows offsets, not tokens


MARKERS = "osD^v<>ph*XP"


def pareto(result: dict, path: str) -> None:
    """Accuracy vs answer tokens/s (log scale), one labelled marker per recipe, and the Pareto
    front (no other recipe both faster and at least as accurate) joined by a line."""
    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    for i, r in enumerate(runs):
        ax.scatter(
            r["answer_tokens_per_s"],
            100 * r["accuracy"],
            s=55,
            zorder=3,
            marker=MARKERS[i % len(MARKERS)],
            label=r["recipe"],
        )
    front = sorted(
        (
            r
            for r in runs
            if not any(
                o["answer_tokens_per_s"] > r["answer_tokens_per_s"]
                and o["accuracy"] >= r["accuracy"]
                for o in runs
            )
        ),
        key=lambda r: r["answer_tokens_per_s"],
    )
    ax.plot(
        [r["answer_tokens_per_s"] for r in front],
        [100 * r["accuracy"] for r in front],
        color="0.6",
        lw=1,
        ls="--",
        zorder=2,
        label="Pareto front",
    )
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    # Minor ticks labelled at 2x, 3x and 5x a power of ten only: 7, 8, 9 would run together.
    sparse = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else "")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(sparse)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("answer tokens / s (log scale; right is faster)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(
        f"{result['model']} on {result['task']} (n={result['n']}, {result['machine']})", fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@dataclass
class StepTables:
    """One sample's decoding as arrays; G generated positions, S steps, n_layers layers."""

    conf: np.ndarray  # [G, S] candidate confidence of positions still masked; NaN elsewhere
    revealed_at: np.ndarray  # [G] the step that revealed each position, -1 if none did
    rows: np.ndarray  # [n_layers, S] cells recomputed per layer at each step
    block_starts: list[int]  # steps at which a new block opened
    canvas_len: int  # T: prompt + generated positions

    @property
    def steps(self) -> int:
        return self.conf.shape[1]


def step_tables(events: list[StepEvent], b: int = 0) -> StepTables:
    """Tables for row `b` of a finished request's events (the last one carries the outputs)."""
    if not events or not events[-1].done:
        raise ValueError("step plots need every event of a finished request")
    out = events[-1].outputs[b]
    events = [e for e in events if e.batch_index == b]
    G, S = len(out.ids), len(events)
    conf = np.full((G, S), np.nan)
    revealed_at = np.full(G, -1)
    rows = np.zeros((events[0].rows.shape[-1], S))
    block_starts = []
    for s, e in enumerate(events):
        lo, hi = e.block.start, e.block.end
        masked = e.masked[0].cpu().numpy()
        values = e.conf[0].float().cpu().numpy()
        conf[lo:hi, s] = np.where(masked, values, np.nan)
        revealed_at[lo:hi][e.reveal[0].cpu().numpy()] = s
        rows[:, s] = e.rows[0].cpu().numpy()
        if e.step_in_block == 0:
            block_starts.append(s)
    canvas_len = out.metrics.prompt_tokens + out.metrics.all_tokens
    return StepTables(conf, revealed_at, rows, block_starts, canvas_len)


def _block_lines(ax, tables: StepTables, color: str) -> None:
    for s in tables.block_starts[1:]:
        ax.axvline(s - 0.5, color=color, lw=0.8, ls="--")


def _width(steps: int) -> float:
    return min(14.0, max(6.4, 4 + steps * 0.06))


def confidence_heatmap(
    events: list[StepEvent], path: str, tokens: list[str] | None = None, title: str = ""
) -> None:
    """Positions x steps: the candidate's confidence while a position is masked in the active
    block, a marker at the step that reveals it, grey once revealed. `tokens` label positions."""
    t = step_tables(events)
    G, S = t.conf.shape
    revealed = np.zeros((G, S))
    for g, s in enumerate(t.revealed_at):
        if s >= 0:
            revealed[g, s + 1 :] = 1
    series = controller_series(events)
    height = min(12, 2.5 + G * 0.16)
    if series:
        fig, (ax, low) = plt.subplots(
            2,
            1,
            figsize=(_width(S), height + 1.8),
            dpi=120,
            sharex=True,
            gridspec_kw={"height_ratios": [height, 1.8]},
        )
    else:
        fig, ax = plt.subplots(figsize=(_width(S), height), dpi=120)
    ax.imshow(
        np.where(revealed > 0, 1.0, np.nan),
        cmap=ListedColormap(["0.85"]),
        aspect="auto",
        interpolation="nearest",
    )
    im = ax.imshow(t.conf, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    hit = t.revealed_at >= 0
    ax.scatter(
        t.revealed_at[hit], np.arange(G)[hit], s=18, marker="o", facecolor="red", edgecolor="white"
    )
    _block_lines(ax, t, "0.35")
    if not series:
        ax.set_xlabel("step")
    ax.set_ylabel("generated position")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if tokens is not None and G <= MAX_TOKEN_LABELS:
        ax.set_yticks(range(G), [f"{i} {tok!r}"[:18] for i, tok in enumerate(tokens[:G])])
        ax.tick_params(axis="y", labelsize=6)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="candidate confidence (masked)")
    ax.legend(
        handles=[
            Line2D(
                [], [], ls="", marker="o", mfc="red", mec="white", label="revealed at this step"
            ),
            Patch(color="0.85", label="already revealed"),
            Patch(facecolor="white", edgecolor="0.6", label="outside the active block"),
            Line2D([], [], color="0.35", lw=0.6, ls="--", label="new block"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08 if G > 24 else -0.18),
        ncol=2,
        fontsize=7,
        frameon=False,
    )
    ax.set_title(title or f"confidence per step ({G} positions, {S} steps)", fontsize=9)
    if series:
        _controller_panel(low, series, t)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# Values policies report per step (StepEvent.info): probabilities on the left axis, sizes on the
# right (CadLLM's tau_t and confidence, B_t / S_t / V_t; APD's mean threshold).
UNIT_KEYS = {"tau": "τ_t", "confidence": "confidence c_t", "apd_tau_mean": "APD mean τ"}
SIZE_KEYS = {"block_len": "B_t", "block_steps": "S_t", "vocab": "V_t"}


def controller_series(events: list[StepEvent]) -> dict[str, np.ndarray]:
    """Per-step numeric series of the controller values in the events' info (NaN where a step
    reported none); empty when the recipe reports no such values."""
    out = {}
    for key in (*UNIT_KEYS, *SIZE_KEYS):
        vals = [e.info.get(key) for e in events]
        if any(isinstance(v, (int, float)) for v in vals):
            out[key] = np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in vals])
    return out


def _controller_panel(ax, series: dict[str, np.ndarray], t: StepTables) -> None:
    steps = np.arange(len(next(iter(series.values()))))
    handles = []
    for key, label in UNIT_KEYS.items():
        if key in series:
            (h,) = ax.plot(steps, series[key], lw=1.2, label=label)
            handles.append(h)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("prob.", fontsize=7)
    sizes = [k for k in SIZE_KEYS if k in series]
    if sizes:
        right = ax.twinx()
        for key, style in zip(sizes, (":", "-.", "--"), strict=False):
            (h,) = right.step(steps, series[key], where="mid", ls=style, color="0.3", lw=1)
            handles.append(h)
            h.set_label(SIZE_KEYS[key])
        right.set_yscale("log")
        right.set_ylabel("size", fontsize=7)
        right.tick_params(labelsize=6)
    _block_lines(ax, t, "0.6")
    ax.tick_params(labelsize=6)
    ax.set_xlabel("step")
    ax.legend(
        handles=handles,
        fontsize=6,
        ncol=len(handles),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.45),
        frameon=False,
    )


def rows_heatmap(events: list[StepEvent], path: str, title: str = "") -> None:
    """Layers x steps: (position x layer) cells each layer recomputed at each step, out of the
    canvas length T; a no-cache run is uniformly T, a cache shows what it skipped."""
    t = step_tables(events)
    n_layers, S = t.rows.shape
    fig, ax = plt.subplots(figsize=(_width(S), 1.8 + 0.35 * n_layers), dpi=120)
    # A square-root scale: the full refreshes (T rows) would otherwise flatten the partial ones.
    im = ax.imshow(
        t.rows,
        cmap="magma",
        norm=PowerNorm(0.5, vmin=0, vmax=t.canvas_len),
        aspect="auto",
        interpolation="nearest",
        origin="lower",
    )
    _block_lines(ax, t, "cyan")
    ax.set_xlabel("step (dashed: a new block)")
    ax.set_ylabel("layer")
    ax.set_yticks(range(n_layers))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label=f"rows (of T = {t.canvas_len})")
    total = t.rows.sum()
    ax.set_title(
        (title or "rows recomputed per layer per step")
        + f"\n{total:.0f} cells = {total / (t.canvas_len * n_layers * S):.0%} "
        "of a full forward at every step",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def tune_trials(
    points: list[dict],
    pruned: list[dict],
    front: list[dict],
    presets: dict[str, dict],
    path: str,
    title: str = "",
) -> None:
    """Every trial of a tune study, accuracy against cost (cells per AR cell, log scale): the
    complete ones as dots, the pruned ones where they stopped, the Pareto front joined by a line,
    the presets as labelled stars (all on the dev slice)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    if pruned:
        ax.scatter(
            [p["cost"] for p in pruned],
            [100 * p["accuracy"] for p in pruned],
            marker="x",
            s=18,
            color="0.7",
            label=f"pruned ({len(pruned)}, where they stopped)",
        )
    if points:
        ax.scatter(
            [p["cost"] for p in points],
            [100 * p["accuracy"] for p in points],
            s=16,
            color="tab:blue",
            alpha=0.6,
            label=f"trials ({len(points)})",
        )
    if front:
        ax.plot(
            [p["cost"] for p in front],
            [100 * p["accuracy"] for p in front],
            "-o",
            color="tab:red",
            ms=5,
            drawstyle="steps-post",
            label=f"Pareto front ({len(front)})",
            zorder=3,
        )
    placed: list[tuple[float, float]] = []
    for name, p in sorted(presets.items(), key=lambda kv: kv[1]["cost"]):
        x, y = p["cost"], 100 * p["accuracy"]
        ax.scatter(x, y, marker="*", s=120, color="k", zorder=4)
        # labels of presets that sit close together are stacked, not overprinted
        near = sum(1 for px, py in placed if abs(np.log(x / px)) < 0.3 and abs(y - py) < 1.5)
        placed.append((x, y))
        ax.annotate(name, (x, y), xytext=(4, 4 - 9 * near), fontsize=7, textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("cost: cells per AR cell (log; forwards priced in rows)")
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title(title or "unmask tune")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)

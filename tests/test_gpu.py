"""The same engine on a CUDA GPU: exactness of every refresh policy against the no-cache path in
float32, the shipped checkpoints in their bfloat16 serving dtype, and a training step on the GPU.
Skipped where there is no GPU (CI); run them where one is lent."""

from __future__ import annotations

import pytest
import torch

from unmask.generate import generate
from unmask.models.load import load
from unmask.recipe import parse
from unmask.tasks import get_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

PROMPT = "Question: Tom has 3 apples. He buys 2 more. How many apples does Tom have?\nAnswer:"
EXACT = [
    ("vanilla+blocks=fixed:len=1+refresh=dual", "vanilla+blocks=fixed:len=1"),
    ("vanilla+refresh=dkv:interval=1", "vanilla"),
    ("vanilla+refresh=dllm-cache:kp=1,kr=1", "vanilla"),
    ("vanilla+refresh=dcu:budget=24,window=4,prompt_interval=1", "vanilla"),
    ("vanilla+unmask=apd:tau=0.3,alpha=0,beta=0", "vanilla+unmask=threshold:tau=0.3"),
]


@pytest.fixture(scope="module")
def tiny_cuda(tiny):
    return load(tiny[0], device="cuda", dtype=torch.float32)


@pytest.mark.parametrize("spec,reference", EXACT)
def test_refresh_everything_equals_no_cache_on_cuda(tiny_cuda, spec, reference):
    def run(s):
        return generate(tiny_cuda, PROMPT, parse(s), gen_len=24, block_len=8)[0]

    got, want = run(spec), run(reference)
    assert got.ids == want.ids
    if "apd" not in spec:
        assert got.metrics.rows == want.metrics.rows


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
@pytest.mark.parametrize("recipe", ["vanilla", "fast-dllm", "dynamic-dllm"])
def test_shipped_decodes_in_bf16_on_cuda(name, recipe):
    from unmask.models.load import CHECKPOINTS

    if not (CHECKPOINTS / name / "config.json").is_file():
        pytest.skip(f"{name} is not shipped in this tree yet")
    lm = load(name, device="cuda")
    assert next(lm.model.parameters()).dtype == torch.bfloat16  # the config's serving dtype
    task = get_task("arith")
    samples = task.samples("test", 10)
    outs = generate(
        lm,
        [s.prompt for s in samples],
        parse(recipe),
        gen_len=task.gen_len,
        block_len=task.block_len,
        stop=list(task.stop) or None,
    )
    assert all(lm.args.mask_id not in o.ids for o in outs)
    correct = sum(task.score(s, o.text) for s, o in zip(samples, outs, strict=True))
    assert correct >= 7, [o.text for o in outs]


def test_training_on_cuda_resumes_on_the_cpu_and_the_loss_falls(tmp_path):
    import json

    from unmask.train import TrainConfig, train

    shape = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden": 64}
    run = {"out": str(tmp_path / "run"), "lr": 3e-3, "warmup": 5, "batch": 16, **shape}
    train(TrainConfig(steps=40, save_every=20, device="cuda", **run), log=lambda *_: None)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    assert all(t.device.type == "cpu" for t in state["model"].values())  # resumable anywhere
    train(TrainConfig(steps=60, save_every=20, device="cpu", **run), log=lambda *_: None)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").open()]
    assert [h["step"] for h in history] == [20, 40, 60]
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_decode_as_eager_for_every_preset(name, dtype, monkeypatch):
    """Captured and replayed one-row steps (models/graphs.py) give eager decoding's tokens, NFE
    and cells, and the fixed-rows presets do replay."""
    import dataclasses

    import unmask.engine
    from unmask.recipe import PRESETS

    eager = load(name, device="cuda", dtype=dtype)
    graphed = dataclasses.replace(eager, graphs=True)
    made = []

    class Recorded(unmask.engine.StepGraphs):
        def __init__(self, capture: bool):
            assert capture
            super().__init__(capture)
            made.append(self)

    monkeypatch.setattr(unmask.engine, "StepGraphs", Recorded)
    prompts = [s.prompt for s in get_task("arith", shots=0).samples("test", 3)]
    for preset in PRESETS:
        recipe = parse(preset + "+gen_len=64")
        for p in prompts:
            want = [(o.ids, o.metrics.nfe, o.metrics.rows) for o in generate(eager, p, recipe)]
            got = [(o.ids, o.metrics.nfe, o.metrics.rows) for o in generate(graphed, p, recipe)]
            assert got == want, (preset, p)
    assert sum(g.captured for g in made) > 0 and sum(g.replays for g in made) > 0

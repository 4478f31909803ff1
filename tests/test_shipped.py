"""The checkpoints shipped in the package: Hub layout, size, and that they decode correctly."""

from __future__ import annotations

import json

import pytest

from unmask.generate import generate
from unmask.models.load import CHECKPOINTS, load
from unmask.recipe import parse
from unmask.tasks import get_task

# model_type, a tensor of the family's Hub layout, the task it was trained on, and how many of
# that task's first 10 test problems vanilla decoding must solve (the ship bar is >= 90% / 85%
# over 500; one or two short of what it scores here leaves room for float differences).
EXPECTED = {
    "tiny-llada": ("llada", "model.transformer.blocks.0.q_proj.weight", "arith", 8),
    "tiny-dream": ("Dream", "model.layers.0.self_attn.q_proj.weight", "arith", 8),
    "small-llada": ("llada", "model.transformer.blocks.0.q_proj.weight", "wordy", 8),
    "small-dream": ("Dream", "model.layers.0.self_attn.q_proj.weight", "wordy", 7),
}


def shipped(name: str):
    path = CHECKPOINTS / name
    if not (path / "config.json").is_file():
        pytest.skip(f"{name} is not shipped in this tree yet")
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_checkpoint_layout_and_size(name: str) -> None:
    path = shipped(name)
    model_type, tensor, _, _ = EXPECTED[name]
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == model_type
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert tensor in f.keys()
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size <= 25 * 2**20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_checkpoint_solves_its_task(name: str) -> None:
    """Vanilla decoding by name answers held-out problems of the task it was trained on."""
    shipped(name)
    lm = load(name)
    _, _, task_name, bar = EXPECTED[name]
    task = get_task(task_name)
    samples = task.samples("test", 10)
    outs = generate(
        lm,
        [s.prompt for s in samples],
        parse("vanilla"),
        gen_len=task.gen_len,
        block_len=task.block_len,
        stop=list(task.stop) or None,
    )
    assert all(lm.args.mask_id not in o.ids for o in outs)
    assert sum(task.score(s, o.text) for s, o in zip(samples, outs, strict=True)) >= bar

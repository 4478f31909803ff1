"""Checkpoint averaging (`unmask average`): the mean of the weights, in the first checkpoint's
layout, and clear refusals for what cannot be averaged."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import make_checkpoint
from safetensors.torch import load_file, save_file

from unmask.cli import main
from unmask.generate import generate
from unmask.models import load as ckpt
from unmask.recipe import parse


def weights(path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def scaled_copy(src, dst, factor: float):
    """A copy of checkpoint `src` with every tensor multiplied by `factor`."""
    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        save_file({k: v * factor for k, v in load_file(f).items()}, f, metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("shard", [None, 20_000])
def test_average_is_the_mean_in_the_first_layout(tmp_path, shard):
    a, _ = make_checkpoint(tmp_path, "llada", shard=shard)
    b = scaled_copy(a, tmp_path / "b", 3.0)
    out = ckpt.average([a, b], tmp_path / "avg")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in a.iterdir())
    wa, wavg = weights(a), weights(out)
    assert wa.keys() == wavg.keys()
    for k in wa:  # (x + 3x) / 2 = 2x exactly in float64, and exactly back in float32
        assert torch.equal(wavg[k], 2 * wa[k]), k
    if shard is not None:
        assert (out / "model.safetensors.index.json").is_file()
    ckpt.load(out)  # loads through the normal loader


def test_average_of_copies_decodes_like_the_original(tmp_path):
    a, _ = make_checkpoint(tmp_path, "dream")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    out = ckpt.average([a, b, a], tmp_path / "avg")
    for k, v in weights(a).items():
        assert torch.equal(weights(out)[k], v), k
    prompt, recipe = "Reverse the list: 1 2 3", parse("vanilla")
    ids = [generate(ckpt.load(p), prompt, recipe, gen_len=8, block_len=8)[0].ids for p in (a, out)]
    assert ids[0] == ids[1]


def test_average_refuses_what_cannot_be_averaged(tmp_path):
    a, _ = make_checkpoint(tmp_path, "llada")
    wide, _ = make_checkpoint(tmp_path, "llada", mlp_hidden=96)
    dream, _ = make_checkpoint(tmp_path, "dream")
    with pytest.raises(ckpt.CheckpointError, match="at least two"):
        ckpt.average([a], tmp_path / "x")
    with pytest.raises(ckpt.CheckpointError, match="mlp_hidden"):
        ckpt.average([a, wide], tmp_path / "x")
    with pytest.raises(ckpt.CheckpointError, match="family|tokenizer"):
        ckpt.average([a, dream], tmp_path / "x")
    with pytest.raises(ckpt.CheckpointError, match="not empty"):
        ckpt.average([a, a], wide)  # would overwrite a checkpoint
    missing = tmp_path / "missing"
    shutil.copytree(a, missing)
    f = missing / "model.safetensors"
    w = load_file(f)
    w.pop(sorted(w)[0])
    save_file(w, f, metadata={"format": "pt"})
    with pytest.raises(ckpt.CheckpointError, match="in one checkpoint but not the other"):
        ckpt.average([a, missing], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written for a refusal


def test_cli_average(tmp_path, capsys):
    a, _ = make_checkpoint(tmp_path, "llada")
    b = scaled_copy(a, tmp_path / "b", 0.5)
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "avg")]) == 0
    assert "avg" in capsys.readouterr().out
    assert main(["average", str(a), str(b), "--out", str(tmp_path / "avg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err

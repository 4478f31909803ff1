"""Shared fixtures: random tiny LLaDA and Dream checkpoints written in the Hub layout."""

from __future__ import annotations

import pytest
import torch

from unmask.models import load as ckpt
from unmask.tokenizer import Tokenizer, build_tokenizer
from unmask.train import TrainConfig, corpus, new_model

# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the spinning
# OpenMP workers make every forward tens of times slower.
torch.set_num_threads(1)


def make_checkpoint(root, family: str, seed: int = 0, shard: int | None = None, **arch):
    shape = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden": 64}
    cfg = TrainConfig(family=family, **{**shape, **arch})
    tok_dir = root / f"tok-{family}"
    if not (tok_dir / "tokenizer.json").is_file():
        build_tokenizer(family, corpus(cfg, 300), tok_dir)
    tok = Tokenizer.from_dir(tok_dir)
    torch.manual_seed(seed)
    model = new_model(cfg, tok)
    for p in model.parameters():  # larger weights than the trainer's init: peaky, varied logits
        p.data.normal_(0, 0.3)
    out = root / f"{family}-{seed}-{shard}-{'-'.join(f'{k}{v}' for k, v in arch.items())}"
    ckpt.save(
        model,
        out,
        tok_dir,
        pad_id=model.args.eos_id,
        tokenizer_vocab_size=tok.vocab_size,
        max_shard_bytes=shard,
    )
    return out, model


@pytest.fixture(scope="session")
def ckpt_root(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


@pytest.fixture(scope="session", params=["llada", "dream"])
def tiny(request, ckpt_root):
    """(checkpoint dir, in-memory model) of a random tiny model of each family."""
    return make_checkpoint(ckpt_root, request.param)


@pytest.fixture(scope="session")
def tiny_loaded(tiny):
    return ckpt.load(tiny[0])

"""Scale check on a GPU: write a random-weight checkpoint with the real 8B shapes (LLaDA-8B-Instruct
or Dream-v0-Instruct-7B) in the Hub layout, sharded, load it through the normal loader, and time
recipes with `unmask bench`. Random weights make confidences meaningless, so compare per-step cost
(NFE, rows, wall time), not accuracy.

    python scripts/scale_check.py --family llada --out /tmp/llada-8b-random
    python scripts/scale_check.py --family llada-52m --device cpu --dtype float32 \
        --out /tmp/llada-52m
"""

from __future__ import annotations

import argparse
import time

import torch

from unmask.models import load as ckpt
from unmask.models.layers import ModelArgs, Transformer
from unmask.tokenizer import Tokenizer

SHAPES = {  # from the released config.json files
    "llada": dict(
        d_model=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        mlp_hidden=12288,
        vocab_size=126464,
        rope_theta=500000.0,
        norm_eps=1e-5,
        qkv_bias=False,
        max_seq_len=4096,
        mask_id=126336,
        eos_id=126081,
        logit_shift=False,
    ),
    "dream": dict(
        d_model=3584,
        n_layers=28,
        n_heads=28,
        n_kv_heads=4,
        mlp_hidden=18944,
        vocab_size=152064,
        rope_theta=1000000.0,
        norm_eps=1e-6,
        qkv_bias=True,
        max_seq_len=131072,
        mask_id=151666,
        eos_id=151643,
        logit_shift=True,
    ),
}
# A 52M-parameter LLaDA-like stand-in for CPU cost checks (d 1024, 4 layers, the tiny vocabulary):
# big enough that a row's matmuls, not Python, set a step's cost.
SHAPES["llada-52m"] = dict(
    SHAPES["llada"],
    d_model=1024,
    n_layers=4,
    n_heads=16,
    n_kv_heads=16,
    mlp_hidden=2816,
    vocab_size=404,
    mask_id=403,
    eos_id=399,
)
TOKENIZERS = {
    "llada": "unmask/checkpoints/tiny-llada",
    "llada-52m": "unmask/checkpoints/tiny-llada",
    "dream": "unmask/checkpoints/tiny-dream",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=sorted(SHAPES), default="llada")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=None, help="fewer layers than the real model")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    a = p.parse_args()
    shape = dict(SHAPES[a.family])
    if a.layers:
        shape["n_layers"] = a.layers
    tok_dir = TOKENIZERS[a.family]
    tok = Tokenizer.from_dir(tok_dir)
    args = ModelArgs(family=a.family.split("-")[0], **shape)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(a.device):
        model = Transformer(args).to(getattr(torch, a.dtype))
    with torch.no_grad():
        for name, w in model.named_parameters():
            if w.dim() == 2:
                w.normal_(0, 0.02)
            elif name.endswith("bias"):
                w.zero_()
        # The stand-in tokenizer knows only the first ids: keep random argmaxes among them.
        model.lm_head.weight[tok.vocab_size :] = 0
    n = sum(w.numel() for w in model.parameters())
    print(f"{a.family}: {n / 1e9:.2f}B parameters built in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    ckpt.save(
        model,
        a.out,
        tok_dir,
        pad_id=args.eos_id,
        tokenizer_vocab_size=tok.vocab_size,
        max_shard_bytes=5 * 2**30,
    )
    print(f"saved {a.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

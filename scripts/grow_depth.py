"""Deepen a small checkpoint without changing what it computes: after every `--every` of its
layers a new layer is inserted whose output projections (attention O and MLP down) are zero, so
each new layer adds nothing to the residual stream until training moves those weights; its norms
are ones and its other projections drawn as the trainer draws them (normal, std 0.02). The
grown checkpoint keeps the source's Hub layout, tokenizer and dtype; before writing, the script
checks that both models give the same logits on random canvases.

    python scripts/grow_depth.py training/small-dream/sar3-avg --out runs/dev/deep8
    unmask train --family dream --n-layers 8 --init runs/dev/deep8 ...   # continue training it

For the `wordy` models of issue 13: more depth for the multi-step sums, from a trained start.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unmask.models.load import CheckpointError, family_of, load, resolve

OURS_ZERO = ("o_proj.weight", "down_proj.weight")  # a layer's writes into the residual stream
LAYER = re.compile(r"^(.*layers\.|.*blocks\.)(\d+)\.(.*)$")


def grow(src: Path, out: Path, every: int, seed: int) -> int:
    cfg = json.loads((src / "config.json").read_text())
    key = "num_hidden_layers" if "num_hidden_layers" in cfg else "n_layers"
    n = int(cfg[key])
    fam = family_of(cfg, src)
    zero = tuple(hub for hub, ours in fam.BLOCK_NAMES.items() if ours in OURS_ZERO)
    files = sorted(src.glob("model*.safetensors"))
    if len(files) != 1:
        raise SystemExit(f"error: {src}: expected one model.safetensors (got {len(files)})")
    tensors = load_file(files[0])
    layers: dict[int, dict[str, torch.Tensor]] = {}
    top, prefix = {}, None
    for name, t in tensors.items():
        m = LAYER.match(name)
        if m is None:
            top[name] = t
            continue
        prefix = m.group(1)
        layers.setdefault(int(m.group(2)), {})[m.group(3)] = t
    if sorted(layers) != list(range(n)):
        raise SystemExit(f"error: {src}: layer tensors do not match {key}={n}")
    gen = torch.Generator().manual_seed(seed)
    order: list[dict[str, torch.Tensor]] = []
    for i in range(n):
        order.append(layers[i])
        if (i + 1) % every == 0:
            new = {}
            for part, t in layers[i].items():
                if part in zero or part.endswith("bias"):
                    new[part] = torch.zeros_like(t)
                elif t.dim() == 1:  # a norm's weight
                    new[part] = torch.ones_like(t)
                else:
                    w = torch.randn(t.shape, generator=gen, dtype=torch.float32) * 0.02
                    new[part] = w.to(t.dtype)
            order.append(new)
    grown = dict(top)
    for j, parts in enumerate(order):
        for part, t in parts.items():
            grown[f"{prefix}{j}.{part}"] = t.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model"):
            shutil.copy(f, out / f.name)
    cfg[key] = len(order)
    if "max_window_layers" in cfg:
        cfg["max_window_layers"] = len(order)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(grown, out / "model.safetensors", metadata={"format": "pt"})
    return len(order)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "checkpoint",
        help="a shipped model name or a Hub-layout checkpoint directory (one safetensors file)",
    )
    p.add_argument("--out", required=True, help="a new directory")
    p.add_argument("--every", type=int, default=1, help="insert a layer after every N (default 1)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        src = resolve(a.checkpoint)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        print(f"error: --out {out} is not empty", file=sys.stderr)
        return 2
    if a.every < 1:
        print("error: --every must be >= 1", file=sys.stderr)
        return 2
    n = grow(src, out, a.every, a.seed)
    before, after = load(src, dtype=torch.float32), load(out, dtype=torch.float32)
    ids = torch.randint(
        0, before.args.vocab_size, (2, 96), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        x, y = before.model(ids), after.model(ids)
    err = float((x - y).abs().max())
    if err > 1e-4:
        shutil.rmtree(out)
        print(
            f"error: the grown model's logits differ by {err:.2e}; nothing written", file=sys.stderr
        )
        return 1
    print(f"{out}: {before.args.n_layers} -> {n} layers, same logits (max |diff| {err:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

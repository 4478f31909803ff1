"""Tests for unmask/models/: partial recompute through both `run` paths against the full forward,
left padding, Hub-layout save/load with exact tensor names and config keys, CheckpointErrors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import pytest
import torch
from conftest import make_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from unmask.cache import Cache, LayerSignals
from unmask.models import load as ckpt
from unmask.models.load import CheckpointError
from unmask.policies.refresh import FixedPlan, FullLayeredPlan
from unmask.step import LayerRows, StepPlan

# (family, architecture overrides): MHA and GQA of both families; Dream adds qkv bias.
CONFIGS = [
    ("llada", {}),
    ("llada", {"n_kv_heads": 2, "n_layers": 3}),
    ("dream", {}),
    ("dream", {"n_kv_heads": 1, "n_heads": 2, "n_layers": 3}),
]
TOL = 1e-5


@dataclass
class LayerPlan:
    """A per-layer plan for one row that replays given row masks (None: every row)."""

    masks: list[torch.Tensor | None]  # [1, T] each

    def fixed_rows(self) -> None:
        return None

    def layer_rows(self, layer: int, signals: LayerSignals) -> LayerRows:
        return LayerRows(self.masks[layer])


def run(model, canvas, pos, key_mask, plan, cache, out_rows):
    """model.run with a batch plan: `plan` is FixedPlan/LayerPlan of batch masks [B, T] (split
    into one plan per row, as the loop makes them) or FullLayeredPlan; every out row is needed."""
    B, T = canvas.shape
    if isinstance(plan, FixedPlan):
        rows = [FixedPlan(plan.mask[b : b + 1]) for b in range(B)]
    elif isinstance(plan, LayerPlan):
        rows = [LayerPlan([m if m is None else m[b : b + 1] for m in plan.masks]) for b in range(B)]
    else:
        rows = [plan] * B
    step = StepPlan(rows, out_rows, row_mask(out_rows, T))
    return model.run(canvas, pos, key_mask, step, cache)


def padded_batch(a, pads: list[int], T: int, seed: int):
    """A random canvas [B, T] with left padding `pads`, and the engine's pos / key_mask for it."""
    g = torch.Generator().manual_seed(seed)
    canvas = torch.randint(0, a.vocab_size, (len(pads), T), generator=g)  # [B, T]
    canvas[:, T // 2 :: 3] = a.mask_id
    pad = torch.tensor(pads)
    col = torch.arange(T)
    pos = (col - pad[:, None]).clamp(min=0)  # [B, T]
    key_mask = col >= pad[:, None] if any(pads) else None
    return canvas, pos, key_mask, g


def new_cache(a, B: int, T: int) -> Cache:
    return Cache(a.n_layers, B, a.n_kv_heads, T, a.head_dim, a.d_model, torch.float32, "cpu")


def random_mask(B: int, T: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(B, T, generator=g) < p  # [B, T]


def random_rows(B: int, T: int, M: int, g: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randperm(T, generator=g)[:M] for _ in range(B)])  # [B, M]


def row_mask(rows: torch.Tensor, T: int) -> torch.Tensor:
    return torch.zeros(rows.shape[0], T, dtype=torch.bool).scatter_(1, rows, True)


@pytest.fixture(scope="module", params=CONFIGS, ids=["llada", "llada-gqa", "dream", "dream-gqa"])
def model(request, ckpt_root):
    family, arch = request.param
    return make_checkpoint(ckpt_root, family, seed=len(arch), **arch)[1]


# --- partial recompute on an unchanged canvas equals the full forward -------------------------


@pytest.mark.parametrize("pads", [[0], [0, 3], [5, 0, 2]])
def test_fixed_rows_match_full_forward(model, pads):
    a = model.args
    T = 18
    canvas, pos, key_mask, g = padded_batch(a, pads, T, seed=len(pads))
    B = canvas.shape[0]
    with torch.no_grad():
        full = model(canvas, pos, key_mask)  # [B, T, V]
    cache = new_cache(a, B, T)
    every = torch.ones(B, T, dtype=torch.bool)
    all_rows = torch.arange(T).expand(B, -1)
    hidden, counts = run(model, canvas, pos, key_mask, FixedPlan(every), cache, all_rows)
    assert (model.compute_logits(hidden) - full).abs().max() <= TOL
    assert counts.tolist() == [[T] * a.n_layers] * B
    warm_k, warm_v = cache.k.clone(), cache.v.clone()
    for _ in range(3):
        mask = random_mask(B, T, 0.3, g)
        out_rows = random_rows(B, T, 4, g)
        hidden, counts = run(model, canvas, pos, key_mask, FixedPlan(mask), cache, out_rows)
        want = full.gather(1, out_rows[..., None].expand(-1, -1, full.shape[-1]))
        assert hidden.shape == (B, 4, a.d_model)
        assert (model.compute_logits(hidden) - want).abs().max() <= TOL
        n = (mask | row_mask(out_rows, T)).sum(-1)  # out rows are recomputed too
        assert counts.tolist() == [[int(c)] * a.n_layers for c in n]
        assert (cache.k - warm_k).abs().max() <= TOL
        assert (cache.v - warm_v).abs().max() <= TOL


@pytest.mark.parametrize("pads", [[0], [0, 3]])
def test_per_layer_rows_match_full_forward(model, pads):
    a = model.args
    T = 18
    canvas, pos, key_mask, g = padded_batch(a, pads, T, seed=10 + len(pads))
    B = canvas.shape[0]
    with torch.no_grad():
        full = model(canvas, pos, key_mask)
    cache = new_cache(a, B, T)
    all_rows = torch.arange(T).expand(B, -1)
    hidden, counts = run(model, canvas, pos, key_mask, FullLayeredPlan(), cache, all_rows)
    assert (model.compute_logits(hidden) - full).abs().max() <= TOL
    assert counts.tolist() == [[T] * a.n_layers] * B
    for p in (0.2, 0.5, 0.9):
        masks = [random_mask(B, T, p, g) for _ in range(a.n_layers)]
        hidden, counts = run(model, canvas, pos, key_mask, LayerPlan(masks), cache, all_rows)
        assert (model.compute_logits(hidden) - full).abs().max() <= TOL
        assert counts.tolist() == torch.stack([m.sum(-1) for m in masks], -1).tolist()
    # None (every row) at one layer, an empty set at another, a single row at the rest.
    one = torch.zeros(B, T, dtype=torch.bool)
    one[:, 7] = True
    masks = [None, torch.zeros(B, T, dtype=torch.bool)] + [one] * (a.n_layers - 2)
    out_rows = random_rows(B, T, 5, g)
    hidden, counts = run(model, canvas, pos, key_mask, LayerPlan(masks), cache, out_rows)
    want = full.gather(1, out_rows[..., None].expand(-1, -1, full.shape[-1]))
    assert (model.compute_logits(hidden) - want).abs().max() <= TOL
    assert counts.tolist() == [[T, 0] + [1] * (a.n_layers - 2)] * B


def test_left_padding_does_not_change_a_row(model):
    """The padded row's hidden states equal those of the same tokens run alone, unpadded."""
    a = model.args
    T, pad = 16, 5
    canvas, pos, key_mask, _ = padded_batch(a, [0, pad], T, seed=3)
    canvas[1, pad:] = canvas[0, : T - pad]
    with torch.no_grad():
        batch = model(canvas, pos, key_mask)
        alone = model(canvas[:1, : T - pad])
    assert (batch[1, pad:] - alone[0]).abs().max() <= TOL


# --- Hub layout: save, load, names, config keys ------------------------------------------------

LLADA_LAYER = [
    "attn_norm.weight",
    "q_proj.weight",
    "k_proj.weight",
    "v_proj.weight",
    "attn_out.weight",
    "ff_norm.weight",
    "ff_proj.weight",
    "up_proj.weight",
    "ff_out.weight",
]
DREAM_LAYER = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
]
HUB_NAMES = {
    "llada": {
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
        *(f"model.transformer.blocks.{i}.{n}" for i in range(2) for n in LLADA_LAYER),
    },
    "dream": {
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        *(f"model.layers.{i}.{n}" for i in range(2) for n in DREAM_LAYER),
    },
}
MASK_TOKEN = {"llada": "<|mdm_mask|>", "dream": "<|mask|>"}


def stored_tensors(path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for name in st.keys():
                assert name not in shapes, f"{name} stored twice"
                shapes[name] = tuple(st.get_slice(name).get_shape())
    return shapes


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_fused_projections_give_the_same_bits(name):
    """load() fuses Q/K/V and gate/up into one matmul each; the logits must be bit-identical to
    the separate projections', and the Hub-named parameters keep their shapes and values."""
    from unmask.models.layers import Transformer

    lm = ckpt.load(name)
    plain = Transformer(lm.args)
    plain.load_state_dict(lm.model.state_dict())
    assert all(layer.fused for layer in lm.model.layers)
    assert not any(layer.fused for layer in plain.layers)
    g = torch.Generator().manual_seed(0)
    for T in (7, 64, 195):
        ids = torch.randint(0, lm.args.vocab_size, (2, T), generator=g)
        with torch.no_grad():
            assert torch.equal(lm.model(ids), plain(ids)), T
    assert set(lm.model.state_dict()) == set(plain.state_dict())


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("shard", [None, 4096])
def test_save_load_round_trip(ckpt_root, family, shard):
    path, model = make_checkpoint(ckpt_root, family, shard=shard)
    lm = ckpt.load(path)
    assert lm.args == model.args
    ids = torch.randint(0, model.args.vocab_size, (2, 11), generator=torch.Generator())
    with torch.no_grad():
        assert torch.equal(lm.model(ids), model(ids))
    shapes = stored_tensors(path)
    assert set(shapes) == HUB_NAMES[family]
    files = sorted(p.name for p in path.glob("*.safetensors"))
    if shard is None:
        assert files == ["model.safetensors"]
        assert not (path / "model.safetensors.index.json").exists()
        return
    assert len(files) > 2
    assert files == [
        f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)
    ]
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == HUB_NAMES[family]
    assert set(index["weight_map"].values()) == set(files)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert index["metadata"]["total_size"] == total


def test_llada_layout(ckpt_root):
    path, model = make_checkpoint(ckpt_root, "llada", seed=1, n_kv_heads=2, n_layers=2)
    a = model.args
    shapes = stored_tensors(path)
    assert shapes["model.transformer.blocks.1.attn_out.weight"] == (32, 32)
    assert shapes["model.transformer.blocks.0.k_proj.weight"] == (16, 32)  # 2 kv heads of 8
    assert shapes["model.transformer.blocks.0.ff_proj.weight"] == (64, 32)
    assert shapes["model.transformer.blocks.0.ff_out.weight"] == (32, 64)
    assert shapes["model.transformer.ff_out.weight"] == (a.vocab_size, 32)
    assert torch.equal(
        load_file(path / "model.safetensors")["model.transformer.blocks.0.ff_proj.weight"],
        model.layers[0].gate_proj.weight,
    )
    cfg = json.loads((path / "config.json").read_text())
    tok = ckpt.load(path).tokenizer
    assert cfg["model_type"] == "llada"
    assert cfg["architectures"] == ["LLaDAModelLM"]
    assert {k: cfg[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads")} == {
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
    }
    assert cfg["mlp_hidden_size"] == 64
    assert cfg["embedding_size"] == a.vocab_size
    assert cfg["vocab_size"] == tok.vocab_size
    assert cfg["mask_token_id"] == tok.token_to_id("<|mdm_mask|>") == a.mask_id
    assert cfg["eos_token_id"] == tok.token_to_id("<|endoftext|>") == a.eos_id
    assert cfg["block_type"] == "llama"
    assert cfg["weight_tying"] is False
    assert cfg["include_qkv_bias"] is False


def test_dream_layout(ckpt_root):
    path, model = make_checkpoint(ckpt_root, "dream", seed=1, n_kv_heads=2, n_layers=2)
    a = model.args
    shapes = stored_tensors(path)
    assert shapes["model.layers.0.self_attn.q_proj.bias"] == (32,)
    assert shapes["model.layers.1.self_attn.k_proj.weight"] == (16, 32)
    assert shapes["model.layers.1.self_attn.v_proj.bias"] == (16,)
    assert shapes["lm_head.weight"] == (a.vocab_size, 32)
    assert torch.equal(
        load_file(path / "model.safetensors")["model.layers.1.self_attn.q_proj.bias"],
        model.layers[1].q_proj.bias,
    )
    cfg = json.loads((path / "config.json").read_text())
    tok = ckpt.load(path).tokenizer
    assert cfg["model_type"] == "Dream"
    assert cfg["architectures"] == ["DreamModel"]
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    assert [cfg[k] for k in keys] == [32, 2, 4, 2]
    assert cfg["intermediate_size"] == 64
    assert cfg["vocab_size"] == a.vocab_size
    assert cfg["mask_token_id"] == tok.token_to_id("<|mask|>") == a.mask_id
    assert cfg["eos_token_id"] == tok.token_to_id("<|endoftext|>") == a.eos_id
    assert cfg["tie_word_embeddings"] is False
    assert cfg["rope_scaling"] is None
    assert a.logit_shift and a.qkv_bias


# --- bad checkpoints: one-line CheckpointError naming the problem -----------------------------

MISSING = {
    "llada": "model.transformer.blocks.1.attn_out.weight",
    "dream": "model.layers.1.self_attn.q_proj.bias",
}
WIDTH_KEY = {"llada": "d_model", "dream": "hidden_size"}
EMBED = {"llada": "model.transformer.wte.weight", "dream": "model.embed_tokens.weight"}
UP = {
    "llada": "model.transformer.blocks.1.up_proj.weight",
    "dream": "model.layers.1.mlp.up_proj.weight",
}


@pytest.fixture(params=["llada", "dream"])
def broken(request, ckpt_root, tmp_path):
    """(family, a fresh copy of a good single-file checkpoint to damage)."""
    src, _ = make_checkpoint(ckpt_root, request.param)
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return request.param, dst


def load_error(path) -> str:
    with pytest.raises(CheckpointError) as e:
        ckpt.load(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def edit_config(path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            del cfg[k]
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg))


def edit_tensors(path, drop: str | None = None, **replace: torch.Tensor) -> None:
    tensors = load_file(path / "model.safetensors")
    if drop:
        del tensors[drop]
    tensors.update(replace)
    save_file(tensors, path / "model.safetensors")


def test_missing_tensor(broken):
    family, path = broken
    edit_tensors(path, drop=MISSING[family])
    assert f"missing tensor {MISSING[family]!r}" in load_error(path)


def test_unexpected_tensor(broken):
    _, path = broken
    edit_tensors(path, **{"model.extra.weight": torch.zeros(3)})
    assert "unexpected tensor 'model.extra.weight'" in load_error(path)


def test_width_disagrees_with_config(broken):
    family, path = broken
    vocab = ckpt.load(path).args.vocab_size
    edit_config(path, **{WIDTH_KEY[family]: 48})
    msg = load_error(path)
    assert f"tensor {EMBED[family]!r} has shape ({vocab}, 32), expected ({vocab}, 48)" in msg


def test_tensor_with_wrong_shape(broken):
    family, path = broken
    edit_tensors(path, **{UP[family]: torch.zeros(63, 32)})
    assert f"tensor {UP[family]!r} has shape (63, 32), expected (64, 32)" in load_error(path)


def test_unknown_model_type(broken):
    _, path = broken
    edit_config(path, model_type="gpt2")
    msg = load_error(path)
    assert "unknown model_type 'gpt2'" in msg
    assert "llada" in msg and "Dream" in msg


def test_missing_config_key(broken):
    family, path = broken
    key = {"llada": "n_layers", "dream": "num_hidden_layers"}[family]
    edit_config(path, **{key: None})
    assert f"missing config key {key!r}" in load_error(path)


def test_config_not_json(broken):
    _, path = broken
    (path / "config.json").write_text("{'d_model': 32")
    assert "config.json: not valid JSON" in load_error(path)


def test_missing_config(broken):
    _, path = broken
    (path / "config.json").unlink()
    assert load_error(path) == f"{path}: no config.json"


def test_no_weights(broken):
    _, path = broken
    (path / "model.safetensors").unlink()
    assert "neither model.safetensors nor model.safetensors.index.json" in load_error(path)


def test_unsupported_llada_variant(ckpt_root, tmp_path):
    src, _ = make_checkpoint(ckpt_root, "llada")
    shutil.copytree(src, tmp_path / "c")
    edit_config(tmp_path / "c", block_type="sequential")
    assert "unsupported LLaDA config: block_type='sequential'" in load_error(tmp_path / "c")


def test_missing_shard(ckpt_root, tmp_path):
    src, _ = make_checkpoint(ckpt_root, "dream", shard=4096)
    path = tmp_path / "c"
    shutil.copytree(src, path)
    gone = sorted(path.glob("model-*.safetensors"))[1]
    gone.unlink()
    assert f"shard {gone.name} listed in the index is missing" in load_error(path)


def test_index_not_json(ckpt_root, tmp_path):
    src, _ = make_checkpoint(ckpt_root, "llada", shard=4096)
    path = tmp_path / "c"
    shutil.copytree(src, path)
    (path / "model.safetensors.index.json").write_text("{not json")
    assert "model.safetensors.index.json" in load_error(path)


def test_truncated_weights(broken):
    _, path = broken
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "model.safetensors" in load_error(path)


def test_unknown_name(tmp_path):
    msg = load_error("no-such-model")
    assert msg.startswith("no model 'no-such-model': not a directory")
    assert "tiny-llada" in msg and "tiny-dream" in msg
    (tmp_path / "file").write_text("x")
    assert "not a directory" in load_error(tmp_path / "file")

"""Dream (`model_type: Dream`): config keys and tensor names of Dream-org/Dream-v0-Instruct-7B.

A Qwen2-shaped bidirectional model whose logits are shifted: position p is predicted at p-1.
"""

from __future__ import annotations

from unmask.models.layers import ModelArgs, config_number

MODEL_TYPE = "Dream"
ARCHITECTURE = "DreamModel"


def args_from_config(cfg: dict) -> ModelArgs:
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"unsupported Dream config: hidden_act={act!r} (expected 'silu')")
    if cfg.get("rope_scaling"):
        raise ValueError(f"unsupported Dream config: rope_scaling={cfg['rope_scaling']!r}")
    n_heads = cfg["num_attention_heads"]
    return ModelArgs(
        family="dream",
        vocab_size=cfg["vocab_size"],
        d_model=cfg["hidden_size"],
        n_layers=cfg["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
        mlp_hidden=cfg["intermediate_size"],
        rope_theta=config_number(cfg, "rope_theta", 10000.0),
        norm_eps=config_number(cfg, "rms_norm_eps", 1e-6),
        qkv_bias=True,
        max_seq_len=cfg.get("max_position_embeddings", 32768),
        mask_id=cfg["mask_token_id"],
        eos_id=cfg["eos_token_id"],
        logit_shift=True,
        block_head_first=True,
    )


def tied(cfg: dict) -> bool:
    return bool(cfg.get("tie_word_embeddings", False))


def config_from_args(a: ModelArgs, vocab_size: int, pad_id: int) -> dict:
    """A config.json with Dream-v0-Instruct-7B's keys, for checkpoints this project writes."""
    return {
        "architectures": [ARCHITECTURE],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "bos_token_id": pad_id,
        "eos_token_id": a.eos_id,
        "hidden_act": "silu",
        "hidden_size": a.d_model,
        "initializer_range": 0.02,
        "intermediate_size": a.mlp_hidden,
        "mask_token_id": a.mask_id,
        "max_position_embeddings": a.max_seq_len,
        "max_window_layers": a.n_layers,
        "model_type": MODEL_TYPE,
        "num_attention_heads": a.n_heads,
        "num_hidden_layers": a.n_layers,
        "num_key_value_heads": a.n_kv_heads,
        "pad_token_id": pad_id,
        "rms_norm_eps": a.norm_eps,
        "rope_scaling": None,
        "rope_theta": a.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": a.vocab_size,
    }


LAYER_PREFIX = "model.layers"
BLOCK_NAMES = {  # checkpoint name inside a layer -> ours
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "q_proj.weight",
    "self_attn.q_proj.bias": "q_proj.bias",
    "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.k_proj.bias": "k_proj.bias",
    "self_attn.v_proj.weight": "v_proj.weight",
    "self_attn.v_proj.bias": "v_proj.bias",
    "self_attn.o_proj.weight": "o_proj.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
    "mlp.gate_proj.weight": "gate_proj.weight",
    "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "down_proj.weight",
}
TOP_NAMES = {  # checkpoint name -> ours
    "model.embed_tokens.weight": "embed.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
}

"""LLaDA (`model_type: llada`): config keys and tensor names of GSAI-ML/LLaDA-8B-Instruct.

Maps the Hub layout onto the shared Transformer in layers.py; holds no compute of its own.
"""

from __future__ import annotations

from unmask.models.layers import ModelArgs, config_number

MODEL_TYPE = "llada"
ARCHITECTURE = "LLaDAModelLM"

# The only LLaDA variant the Hub checkpoints use; anything else is refused by name.
_REQUIRED = {
    "block_type": "llama",
    "activation_type": "silu",
    "layer_norm_type": "rms",
    "rope": True,
    "alibi": False,
    "attention_layer_norm": False,
    "scale_logits": False,
    "input_emb_norm": False,
}


def args_from_config(cfg: dict) -> ModelArgs:
    for key, want in _REQUIRED.items():
        if key in cfg and cfg[key] != want:
            raise ValueError(f"unsupported LLaDA config: {key}={cfg[key]!r} (expected {want!r})")
    d = cfg["d_model"]
    n_heads = cfg["n_heads"]
    n_kv = cfg.get("n_kv_heads") or (1 if cfg.get("multi_query_attention") else n_heads)
    hidden = cfg.get("mlp_hidden_size") or cfg.get("mlp_ratio", 4) * d
    return ModelArgs(
        family="llada",
        vocab_size=cfg.get("embedding_size") or cfg["vocab_size"],
        d_model=d,
        n_layers=cfg["n_layers"],
        n_heads=n_heads,
        n_kv_heads=n_kv,
        mlp_hidden=hidden,
        rope_theta=config_number(cfg, "rope_theta", 10000.0),
        norm_eps=config_number(cfg, "rms_norm_eps", 1e-5),
        qkv_bias=bool(cfg.get("include_qkv_bias") or cfg.get("include_bias")),
        max_seq_len=cfg.get("max_sequence_length", 4096),
        mask_id=cfg["mask_token_id"],
        eos_id=cfg["eos_token_id"],
        logit_shift=False,
    )


def tied(cfg: dict) -> bool:
    return bool(cfg.get("weight_tying", False))


def config_from_args(a: ModelArgs, vocab_size: int, pad_id: int) -> dict:
    """A config.json with the keys of LLaDA-8B-Instruct's, for checkpoints this project writes."""
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": [ARCHITECTURE],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": a.d_model,
        "embedding_dropout": 0.0,
        "embedding_size": a.vocab_size,
        "eos_token_id": a.eos_id,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": a.qkv_bias,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": a.mask_id,
        "max_sequence_length": a.max_seq_len,
        "mlp_hidden_size": a.mlp_hidden,
        "mlp_ratio": max(1, a.mlp_hidden // a.d_model),
        "model_type": MODEL_TYPE,
        "multi_query_attention": None,
        "n_heads": a.n_heads,
        "n_kv_heads": a.n_kv_heads,
        "n_layers": a.n_layers,
        "pad_token_id": pad_id,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": a.norm_eps,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": a.rope_theta,
        "scale_logits": False,
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab_size,
        "weight_tying": False,
    }


LAYER_PREFIX = "model.transformer.blocks"
BLOCK_NAMES = {  # checkpoint name inside a layer -> ours
    "attn_norm.weight": "attn_norm.weight",
    "q_proj.weight": "q_proj.weight",
    "q_proj.bias": "q_proj.bias",
    "k_proj.weight": "k_proj.weight",
    "k_proj.bias": "k_proj.bias",
    "v_proj.weight": "v_proj.weight",
    "v_proj.bias": "v_proj.bias",
    "attn_out.weight": "o_proj.weight",
    "ff_norm.weight": "mlp_norm.weight",
    "ff_proj.weight": "gate_proj.weight",
    "up_proj.weight": "up_proj.weight",
    "ff_out.weight": "down_proj.weight",
}
TOP_NAMES = {  # checkpoint name -> ours
    "model.transformer.wte.weight": "embed.weight",
    "model.transformer.ln_f.weight": "norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}

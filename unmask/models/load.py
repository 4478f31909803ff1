"""Checkpoint directories in the Hub layout in and out: config.json, safetensors (single or
sharded), tokenizer files. Name resolution for the shipped tiny models. No compute here."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from unmask.models import dream, llada
from unmask.models.layers import ModelArgs, Transformer
from unmask.tokenizer import Tokenizer

FAMILIES: dict[str, ModuleType] = {"llada": llada, "dream": dream}
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
SHIPPED = ("tiny-llada", "tiny-dream", "small-llada")
# End-of-turn tokens of the chat templates we know; looked up in the checkpoint's own vocabulary.
END_OF_TURN = ("<|eot_id|>", "<|im_end|>")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the problem in one line."""


@dataclass
class Loaded:
    model: Transformer
    tokenizer: Tokenizer
    args: ModelArgs
    path: Path
    eot_id: int | None  # end of turn (<|eot_id|> / <|im_end|>); stops a row like EOS
    # Replay one-row fixed-rows steps as CUDA graphs (models/graphs.py); on a CPU the same
    # bookkeeping runs without capture (tests). Off unless asked for (`--cuda-graphs`).
    graphs: bool = False

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(i for i in (self.args.eos_id, self.eot_id) if i is not None)


def resolve(name_or_dir: str | Path) -> Path:
    """A shipped model name (SHIPPED) or a local checkpoint directory."""
    if str(name_or_dir) in SHIPPED:
        path = CHECKPOINTS / str(name_or_dir)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"the shipped checkpoint {name_or_dir} is not in this install ({path}); "
                "train one with `unmask train` and pass its directory"
            )
        return path
    path = Path(name_or_dir).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"no model {str(name_or_dir)!r}: not a directory and not one of {', '.join(SHIPPED)}"
        )
    return path


def family_of(cfg: dict, path: Path) -> ModuleType:
    model_type = str(cfg.get("model_type", ""))
    fam = FAMILIES.get(model_type.lower())
    if fam is None:
        raise CheckpointError(
            f"{path / 'config.json'}: unknown model_type {model_type!r} "
            f"(supported: {', '.join(f.MODEL_TYPE for f in FAMILIES.values())})"
        )
    return fam


def read_config(path: Path) -> tuple[ModuleType, dict, ModelArgs]:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: no config.json")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    fam = family_of(cfg, path)
    try:
        args = fam.args_from_config(cfg)
    except KeyError as e:
        raise CheckpointError(f"{cfg_path}: missing config key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    check_args(args, cfg_path)
    return fam, cfg, args


# ModelArgs fields that must be whole numbers, with their least value.
_INT_FIELDS = {
    "vocab_size": 1,
    "d_model": 1,
    "n_layers": 1,
    "n_heads": 1,
    "n_kv_heads": 1,
    "mlp_hidden": 1,
    "max_seq_len": 1,
    "mask_id": 0,
    "eos_id": 0,
}


def check_args(a: ModelArgs, cfg_path: Path) -> None:
    """Types and ranges of what config.json gave, before any tensor is made."""
    for name, least in _INT_FIELDS.items():
        value = getattr(a, name)
        if type(value) is not int or value < least:
            raise CheckpointError(
                f"{cfg_path}: {name} must be an integer >= {least}, got {value!r}"
            )
    for name in ("rope_theta", "norm_eps"):
        value = getattr(a, name)
        if not (math.isfinite(value) and value > 0):
            raise CheckpointError(f"{cfg_path}: {name} must be a positive number, got {value!r}")
    for name in ("mask_id", "eos_id"):
        if getattr(a, name) >= a.vocab_size:
            raise CheckpointError(
                f"{cfg_path}: {name} {getattr(a, name)} is outside the vocabulary of {a.vocab_size}"
            )
    if a.d_model % a.n_heads or a.n_heads % a.n_kv_heads:
        raise CheckpointError(
            f"{cfg_path}: d_model {a.d_model}, n_heads {a.n_heads} and n_kv_heads {a.n_kv_heads} "
            "do not divide evenly"
        )


def tensor_names(fam: ModuleType, internal_names: list[str], tied: bool) -> dict[str, str]:
    """Our parameter name -> checkpoint tensor name, for every parameter of the model."""
    block = {ours: hub for hub, ours in fam.BLOCK_NAMES.items()}
    top = {ours: hub for hub, ours in fam.TOP_NAMES.items()}
    out = {}
    for name in internal_names:
        if name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            out[name] = f"{fam.LAYER_PREFIX}.{i}.{block[rest]}"
        elif name == "lm_head.weight" and tied:
            out[name] = top["embed.weight"]
        else:
            out[name] = top[name]
    return out


def weight_files(path: Path) -> dict[str, Path]:
    """Checkpoint tensor name -> the safetensors file holding it."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid index ({type(e).__name__}: {e})") from None
        return {name: path / fname for name, fname in weight_map.items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{path}: neither model.safetensors nor model.safetensors.index.json")
    return dict.fromkeys(open_weights(single, "cpu").keys(), single)


def open_weights(fpath: Path, device: str):
    try:
        return safe_open(fpath, framework="pt", device=device)
    except SafetensorError as e:
        raise CheckpointError(f"{fpath}: not a readable safetensors file ({e})") from None


def _opened(handles: dict[Path, object], path: Path, fpath: Path, device: str):
    """The safetensors handle of weight file `fpath` of checkpoint `path`, opened once into
    `handles`; a shard the index lists but the directory lacks is a CheckpointError."""
    if fpath not in handles:
        if not fpath.is_file():
            raise CheckpointError(f"{path}: shard {fpath.name} listed in the index is missing")
        handles[fpath] = open_weights(fpath, device)
    return handles[fpath]


def default_dtype(device: torch.device, cfg: dict) -> torch.dtype:
    # CPUs here have no bf16 units; on an accelerator keep the checkpoint's own precision.
    if device.type == "cpu":
        return torch.float32
    name = cfg.get("torch_dtype") or ("bfloat16" if "bf16" in str(cfg.get("precision")) else None)
    return getattr(torch, name) if name else torch.bfloat16


def load(
    name_or_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Loaded:
    path = resolve(name_or_dir)
    fam, cfg, args = read_config(path)
    device = torch.device(device)
    dtype = dtype or default_dtype(device, cfg)
    with torch.device("meta"):
        model = Transformer(args, init=False)
    params = dict(model.named_parameters())
    names = tensor_names(fam, list(params), fam.tied(cfg))
    files = weight_files(path)
    for hub in names.values():
        if hub not in files:
            raise CheckpointError(f"{path}: missing tensor {hub!r}")
    unexpected = sorted(set(files) - set(names.values()))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]!r}{more}")
    state = {}
    handles: dict[Path, object] = {}
    try:
        for ours, hub in names.items():
            t = _opened(handles, path, files[hub], str(device)).get_tensor(hub)
            if tuple(t.shape) != tuple(params[ours].shape):
                raise CheckpointError(
                    f"{path}: tensor {hub!r} has shape {tuple(t.shape)}, "
                    f"expected {tuple(params[ours].shape)} from config.json"
                )
            state[ours] = t.to(dtype)
    finally:
        handles.clear()
    model.load_state_dict(state, assign=True)
    model.eval().requires_grad_(False)
    for layer in model.layers:
        layer.fuse_projections()
    try:
        tokenizer = Tokenizer.from_dir(path)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load tokenizer ({e})") from None
    if tokenizer.vocab_size > args.vocab_size:
        raise CheckpointError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{args.vocab_size} embeddings"
        )
    eot = next((i for t in END_OF_TURN if (i := tokenizer.token_to_id(t)) is not None), None)
    return Loaded(model=model, tokenizer=tokenizer, args=args, path=path, eot_id=eot)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def save(
    model: Transformer,
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    pad_id: int,
    tokenizer_vocab_size: int,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write `model` in its family's Hub layout (sharded with an index past max_shard_bytes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = model.args
    fam = FAMILIES[a.family]
    cfg = fam.config_from_args(a, tokenizer_vocab_size, pad_id)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    names = tensor_names(fam, [n for n, _ in model.named_parameters()], tied=False)
    tensors = {names[n]: p.detach().contiguous().cpu() for n, p in model.named_parameters()}
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    if max_shard_bytes is None:
        save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    else:
        shards: list[dict] = [{}]
        size = 0
        for name, t in tensors.items():
            nbytes = t.numel() * t.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = t
            size += nbytes
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, out / fname, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, fname))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    src = Path(tokenizer_dir)
    if src.resolve() != out.resolve():
        for fname in TOKENIZER_FILES:
            if (src / fname).is_file():
                shutil.copy(src / fname, out / fname)
    return out


def average(sources: list[str | Path], out_dir: str | Path) -> Path:
    """Checkpoint averaging: write to `out_dir` the uniform mean of several checkpoints of one
    architecture (e.g. the snapshots of a low-learning-rate continuation). Each tensor is
    accumulated in float64, one at a time, and stored in the first checkpoint's dtype; the
    config, tokenizer and other files, and the weight file layout (single file or shards and
    index), are the first checkpoint's. Refuses differing architectures, tokenizers or tensor
    sets, and an `out_dir` that already holds files."""
    if len(sources) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    paths = [resolve(s) for s in sources]
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out} already exists and is not empty; pick another --out")
    first_args = read_config(paths[0])[2]
    first_tok = _tokenizer_text(paths[0])
    files = [weight_files(p) for p in paths]
    for p, f in zip(paths[1:], files[1:], strict=True):
        args = read_config(p)[2]
        if args != first_args:
            diff = next(k for k in vars(args) if getattr(args, k) != getattr(first_args, k))
            raise CheckpointError(
                f"{p}: {diff} = {getattr(args, diff)!r}, but {paths[0]} has "
                f"{getattr(first_args, diff)!r}: only one architecture can be averaged"
            )
        if _tokenizer_text(p) != first_tok:
            raise CheckpointError(f"{p}: its tokenizer differs from {paths[0]}'s")
        if set(f) != set(files[0]):
            name = sorted(set(f) ^ set(files[0]))[0]
            raise CheckpointError(f"{p}: tensor {name!r} is in one checkpoint but not the other")
    handles: dict[Path, object] = {}

    def tensor(p: Path, f: dict[str, Path], name: str):
        return _opened(handles, p, f[name], "cpu").get_slice(name)

    try:
        for name in files[0]:  # shapes first: nothing is written for a mismatch
            shape = tensor(paths[0], files[0], name).get_shape()
            for p, f in zip(paths[1:], files[1:], strict=True):
                if (other := tensor(p, f, name).get_shape()) != shape:
                    raise CheckpointError(
                        f"{p}: tensor {name!r} has shape {tuple(other)}, "
                        f"but {paths[0]} has {tuple(shape)}"
                    )
        by_file: dict[str, list[str]] = {}
        for name, fpath in files[0].items():
            by_file.setdefault(fpath.name, []).append(name)
        out.mkdir(parents=True, exist_ok=True)
        for src in paths[0].iterdir():  # config, tokenizer, shard index: the first's
            if src.is_file() and src.suffix != ".safetensors":
                shutil.copy(src, out / src.name)
        for fname, names in by_file.items():
            tensors = {}
            for name in names:
                ts = [tensor(p, f, name)[:] for p, f in zip(paths, files, strict=True)]
                acc = torch.zeros(ts[0].shape, dtype=torch.float64)
                for t in ts:
                    acc += t.double()
                tensors[name] = (acc / len(ts)).to(ts[0].dtype).contiguous()
            save_file(tensors, out / fname, metadata={"format": "pt"})
    finally:
        handles.clear()
    return out


def _tokenizer_text(path: Path) -> str | None:
    f = path / "tokenizer.json"
    return f.read_text() if f.is_file() else None

"""Text <-> ids and chat templates for Hub checkpoint directories, and the tiny BPE builder.

Built on `tokenizers` + `jinja2` only (no `transformers`). Special ids the engine needs (mask, EOS,
EOT) are read from the checkpoint's config by the model loader, not decided here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import Template
from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as Backend

# Qwen2's pre-tokenizer split (Dream ships only vocab.json + merges.txt, so we rebuild it).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class Tokenizer:
    """A `tokenizers.Tokenizer` plus what tokenizer_config.json adds: specials, chat template."""

    def __init__(self, backend: Backend, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.backend = backend
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self.bos_token: str | None = _token_content(config.get("bos_token"))
        self.eos_token: str | None = _token_content(config.get("eos_token"))
        self.pad_token: str | None = _token_content(config.get("pad_token"))
        self.mask_token: str | None = _token_content(config.get("mask_token"))
        self.chat_template: str | None = _pick_template(config.get("chat_template"))

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load tokenizer.json, or else vocab.json + merges.txt as a Qwen2 byte-level BPE."""
        path = Path(path)
        config = _read_json(path / "special_tokens_map.json")
        config.update(
            (k, v) for k, v in _read_json(path / "tokenizer_config.json").items() if v is not None
        )
        if (path / "chat_template.jinja").is_file():
            # Newer Hub repos keep the template beside the config instead of inside it.
            config["chat_template"] = (path / "chat_template.jinja").read_text(encoding="utf-8")
        if (path / "tokenizer.json").is_file():
            try:
                backend = Backend.from_file(str(path / "tokenizer.json"))
            except Exception as e:  # the tokenizers library raises bare Exceptions
                raise ValueError(f"tokenizer.json is not a valid tokenizer ({e})") from None
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            backend = _qwen2_backend(path, config.get("added_tokens_decoder") or {})
        else:
            raise FileNotFoundError(
                f"no tokenizer in {path}: expected tokenizer.json or vocab.json + merges.txt"
            )
        return cls(backend, config)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special-token strings inside it map to their ids, none are added."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # e.g. argv bytes that were not UTF-8 (surrogates)
            raise ValueError(
                f"text is not valid UTF-8 (undecodable byte at character {e.start})"
            ) from None
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """Render the checkpoint's chat template the way transformers does; without one, the last
        user message is the prompt as it is."""
        if self.chat_template is None:
            users = [m["content"] for m in messages if m.get("role") == "user"]
            return users[-1] if users else ""
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            pad_token=self.pad_token or "",
            mask_token=self.mask_token or "",
        )

    @cached_property
    def _template(self) -> Template:
        return _jinja_env().from_string(self.chat_template or "")


def _token_content(value: Any) -> str | None:
    # Real configs write a special token either as a string or as a serialised AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _pick_template(value: Any) -> str | None:
    # transformers also accepts a list of named templates; "default" is the one it renders.
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get("default")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(
    value: Any,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja2's own tojson escapes HTML characters; transformers replaces it with plain json.dumps.
    return json.dumps(
        value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _jinja_env() -> ImmutableSandboxedEnvironment:
    # The same settings transformers uses, so Hub templates render byte-identically.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _qwen2_backend(path: Path, added_tokens_decoder: Mapping[str, Any]) -> Backend:
    vocab: dict[str, int] = _read_json(path / "vocab.json")
    merges = []
    for line in (path / "merges.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            left, right = line.split(" ")
            merges.append((left, right))
    added = sorted(((int(i), t) for i, t in added_tokens_decoder.items()), key=lambda it: it[0])
    for token_id, token in added:
        # Seeding the model vocab pins each added token to its configured id.
        vocab.setdefault(token["content"], token_id)
    backend = Backend(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    for token_id, token in added:
        added_token = AddedToken(
            token["content"],
            single_word=token.get("single_word", False),
            lstrip=token.get("lstrip", False),
            rstrip=token.get("rstrip", False),
            normalized=token.get("normalized", False),
            special=token.get("special", True),
        )
        if added_token.special:
            backend.add_special_tokens([added_token])
        else:
            backend.add_tokens([added_token])
        if backend.token_to_id(token["content"]) != token_id:
            raise ValueError(
                f"{path}: added token {token['content']!r} should have id {token_id}, "
                f"vocab.json gives {backend.token_to_id(token['content'])}"
            )
    return backend


# What each family's real Hub files say: special tokens (role -> content), the rest of the added
# tokens, and a chat template that renders the same strings as the original.
LLADA_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
DREAM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FAMILIES: dict[str, dict[str, Any]] = {
    "llada": {
        "specials": {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        },
        "added": [
            "<|startoftext|>",
            "<|endoftext|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|mdm_mask|>",
        ],
        "template": LLADA_TEMPLATE,
        "extra_config": {
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    },
    "dream": {
        "specials": {
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "mask_token": "<|mask|>",
        },
        "added": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"],
        "template": DREAM_TEMPLATE,
        "extra_config": {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
        },
    },
}


def _added_token_json(content: str) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def build_tokenizer(
    family: str,
    corpus: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 512,
    *,
    model_max_length: int = 1024,
) -> Tokenizer:
    """Train a byte-level BPE on `corpus` and write it to `out_dir` in `family`'s Hub layout; the
    same corpus gives byte-identical files.

    `vocab_size` (specials included) is a cap: merging stops earlier once every word of the corpus
    is one token. The task suite saturates at about 400 ids, so the default leaves room for that.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    n_bytes = len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < n_bytes + len(spec["added"]):
        raise ValueError(f"vocab_size must be >= {n_bytes + len(spec['added'])}, got {vocab_size}")
    backend = Backend(models.BPE(unk_token=None))
    # Digits split one by one, so numbers are digit sequences the model can do arithmetic on.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(spec["added"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer=trainer)
    # Specials go after the learned vocabulary, as on the Hub (LLaDA's and Qwen's sit at the end).
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in spec["added"]]
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(backend.to_str(pretty=True), encoding="utf-8")
    config = {
        "added_tokens_decoder": {
            str(backend.token_to_id(t)): _added_token_json(t) for t in spec["added"]
        },
        **spec["specials"],
        "chat_template": spec["template"],
        "model_max_length": model_max_length,
        **spec["extra_config"],
    }
    # special_tokens_map.json serialises AddedTokens without the "special" flag.
    special_map = {
        role: {k: v for k, v in _added_token_json(t).items() if k != "special"}
        for role, t in spec["specials"].items()
    }
    if "additional_special_tokens" in spec["extra_config"]:
        special_map["additional_special_tokens"] = spec["extra_config"]["additional_special_tokens"]
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        (out_dir / name).write_text(text, encoding="utf-8")
    return Tokenizer.from_dir(out_dir)

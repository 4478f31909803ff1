"""Tests for unmask/tokenizer.py: the tiny BPE builder for both families and Hub-layout loading.

Hub layouts are imitated in tmp dirs (tokenizer.json, or vocab.json + merges.txt as Dream ships).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer as Backend

from unmask.tasks import TASKS, get_task
from unmask.tokenizer import Tokenizer, build_tokenizer

SPECIALS = {
    "llada": [
        "<|startoftext|>",
        "<|endoftext|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|mdm_mask|>",
    ],
    "dream": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"],
}
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    # As the trainer's corpus: prompts and references apart (a reference starts a text).
    return [
        text
        for name in TASKS
        for s in get_task(name).samples("train", 300)
        for text in (s.prompt, s.reference)
    ]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    samples = [s for name in TASKS for s in get_task(name).samples("test", 20)]
    return [s.prompt for s in samples] + [s.reference for s in samples]


@pytest.fixture(scope="module", params=["llada", "dream"])
def built(request: pytest.FixtureRequest, corpus: list[str], tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp(request.param)
    return request.param, build_tokenizer(request.param, corpus, out), out


def test_files_and_determinism(built: tuple, corpus: list[str], tmp_path: Path) -> None:
    family, tok, out = built
    # Merging stops before the cap: the corpus is exhausted with every word one token.
    assert 300 < tok.vocab_size < 512
    build_tokenizer(family, corpus, tmp_path)
    for name in FILES:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name
    config = json.loads((out / "tokenizer_config.json").read_text())
    decoder = {t["content"]: int(i) for i, t in config["added_tokens_decoder"].items()}
    assert decoder == {t: tok.token_to_id(t) for t in SPECIALS[family]}
    assert {"chat_template", "bos_token", "eos_token", "pad_token", "model_max_length"} <= set(
        config
    )


def test_round_trip(built: tuple, texts: list[str]) -> None:
    _, tok, _ = built
    for text in texts + ["naïve café — 日本語 🙂\ttabs\r\n  spaces  ", "#### 1,234.5"]:
        assert tok.decode(tok.encode(text)) == text


def test_task_words_are_single_tokens(built: tuple, texts: list[str]) -> None:
    _, tok, _ = built
    words = {w for text in texts for w in re.findall(r"(?:^| )[A-Za-z]+", text, re.MULTILINE)}
    assert {"Question", " apples", " Reverse"} <= words
    assert {w for w in words if len(tok.encode(w)) > 1} == set()


def test_digits_are_single_tokens(built: tuple, texts: list[str]) -> None:
    _, tok, _ = built
    assert [tok.decode([i]) for i in tok.encode("9876543210")] == list("9876543210")
    for text in texts:
        for piece in (tok.decode([i]) for i in tok.encode(text)):
            assert not any(c.isdigit() for c in piece) or (len(piece) == 1), piece


def test_special_tokens(built: tuple) -> None:
    family, tok, _ = built
    ids = [tok.token_to_id(t) for t in SPECIALS[family]]
    assert None not in ids and len(set(ids)) == len(ids)
    for token, token_id in zip(SPECIALS[family], ids, strict=True):
        assert tok.encode(token) == [token_id]
        assert tok.encode(f"Tom{token}has") == tok.encode("Tom") + [token_id] + tok.encode("has")
        assert tok.decode([token_id]) == token
        assert tok.decode(tok.encode(f"7{token}"), skip_special_tokens=True) == "7"
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.bos_token == ("<|startoftext|>" if family == "llada" else "<|endoftext|>")


def test_chat_template(built: tuple) -> None:
    family, tok, _ = built
    user = [{"role": "user", "content": "Question: 2?\nAnswer:"}]
    turns = [*user, {"role": "assistant", "content": "#### 2"}, {"role": "user", "content": "Hi"}]
    if family == "llada":
        first = (
            "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n"
            "Question: 2?\nAnswer:<|eot_id|>"
        )
        reply = "<|start_header_id|>assistant<|end_header_id|>\n\n"
        assert tok.apply_chat_template(user) == first + reply
        assert tok.apply_chat_template(user, add_generation_prompt=False) == first
        assert tok.apply_chat_template(turns) == (
            first
            + reply
            + "#### 2<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            + reply
        )
    else:
        system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        first = "<|im_start|>user\nQuestion: 2?\nAnswer:<|im_end|>\n"
        reply = "<|im_start|>assistant\n"
        assert tok.apply_chat_template(user) == system + first + reply
        assert tok.apply_chat_template(user, add_generation_prompt=False) == system + first
        custom = [{"role": "system", "content": "Be brief."}, *user]
        assert tok.apply_chat_template(custom) == (
            "<|im_start|>system\nBe brief.<|im_end|>\n" + first + reply
        )
        assert tok.apply_chat_template(turns).endswith(
            "<|im_start|>assistant\n#### 2<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" + reply
        )
    # The rendered prompt tokenizes with each special string as one id.
    ids = tok.encode(tok.apply_chat_template(user))
    assert all(
        tok.token_to_id(t) in ids for t in SPECIALS[family] if t in tok.apply_chat_template(user)
    )


def test_no_template_returns_last_user_message(built: tuple) -> None:
    _, tok, out = built
    bare = Tokenizer(Backend.from_file(str(out / "tokenizer.json")))
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert bare.apply_chat_template(messages) == "b"
    assert bare.bos_token is None


def test_template_helpers(tmp_path: Path, corpus: list[str]) -> None:
    build_tokenizer("llada", corpus, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": "{{ raise_exception('no ' + messages[0]['role']) }}"},
    ]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="no user"):
        Tokenizer.from_dir(tmp_path).apply_chat_template([{"role": "user", "content": "x"}])
    (tmp_path / "chat_template.jinja").write_text("{{ messages | tojson }}")
    rendered = Tokenizer.from_dir(tmp_path).apply_chat_template([{"role": "user", "content": "é"}])
    assert rendered == '[{"role": "user", "content": "é"}]'


def test_vocab_merges_layout(corpus: list[str], texts: list[str], tmp_path: Path) -> None:
    """Dream ships vocab.json + merges.txt: rebuilt as a Qwen2 byte-level BPE plus added tokens."""
    built_dir, hub_dir = tmp_path / "built", tmp_path / "hub"
    reference = build_tokenizer("dream", corpus, built_dir)
    model = json.loads((built_dir / "tokenizer.json").read_text())["model"]
    hub_dir.mkdir()
    specials = set(SPECIALS["dream"])
    vocab = {t: i for t, i in model["vocab"].items() if t not in specials}
    (hub_dir / "vocab.json").write_text(json.dumps(vocab))
    merges = "".join(" ".join(pair) + "\n" for pair in model["merges"])
    (hub_dir / "merges.txt").write_text("#version: 0.2\n" + merges)
    config = json.loads((built_dir / "tokenizer_config.json").read_text())
    config["bos_token"] = {"content": "<|endoftext|>", "lstrip": False}
    del config["eos_token"]  # then it comes from special_tokens_map.json
    (hub_dir / "tokenizer_config.json").write_text(json.dumps(config))
    (hub_dir / "special_tokens_map.json").write_text(
        (built_dir / "special_tokens_map.json").read_text()
    )

    tok = Tokenizer.from_dir(hub_dir)
    assert tok.vocab_size == reference.vocab_size
    assert (tok.bos_token, tok.eos_token, tok.mask_token) == (
        "<|endoftext|>",
        "<|endoftext|>",
        "<|mask|>",
    )
    for token in SPECIALS["dream"]:
        assert tok.token_to_id(token) == reference.token_to_id(token)
    for text in texts:
        assert tok.encode(text) == reference.encode(text)
        assert tok.decode(tok.encode(text)) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": texts[0]}])
    assert tok.encode(prompt) == reference.encode(prompt)


def test_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.from_dir(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="tokenizer.json or vocab.json"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(ValueError, match="llada, dream"):
        build_tokenizer("gpt2", ["a"], tmp_path)

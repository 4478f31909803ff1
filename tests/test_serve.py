"""`unmask serve` on 127.0.0.1, driven by the official `openai` client: completions and chat,
streaming or not, usage, stop strings; concurrent mixed-recipe requests each equal to their solo
run; 4xx with OpenAI-style errors for bad input while the server stays up; a disconnecting
stream frees its row."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed (the serve extra)")
openai = pytest.importorskip("openai", reason="openai not installed (the dev extra)")
from unmask.generate import generate  # noqa: E402
from unmask.models.load import load  # noqa: E402
from unmask.recipe import parse  # noqa: E402
from unmask.serve import Limits, build_app, running  # noqa: E402
from unmask.tasks import get_task  # noqa: E402

PROMPTS = [s.prompt for s in get_task("arith", shots=0).samples("test", 8)]


@pytest.fixture(scope="module")
def server():
    lm = load("tiny-llada")
    app = build_app(lm, "tiny-llada", "fast-dllm", Limits(max_rows=16, max_queue=64, timeout_s=60))
    with running(app) as url:
        yield lm, url, app.state.scheduler


def client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


def solo(lm, prompt: str, spec: str, max_tokens: int, chat: bool, stop=None):
    return generate(lm, prompt, parse(spec), gen_len=max_tokens, chat=chat, stop=stop)[0]


def test_completion_and_chat_equal_unmask_generate(server):
    lm, url, _ = server
    c = client(url)
    for spec, n in (("vanilla", 24), ("fast-dllm", 32), ("cadllm+temperature=1+seed=3", 32)):
        r = c.completions.create(
            model="tiny-llada", prompt=PROMPTS[0], max_tokens=n, extra_body={"recipe": spec}
        )
        want = solo(lm, PROMPTS[0], spec, n, chat=False)
        assert r.choices[0].text == want.text
        assert r.usage.prompt_tokens == want.metrics.prompt_tokens
        assert r.usage.completion_tokens == want.metrics.answer_tokens - (
            want.metrics.answer_tokens < n or want.ids[n - 1] in lm.stop_ids
        )
        r = c.chat.completions.create(
            model="tiny-llada",
            messages=[{"role": "user", "content": PROMPTS[1]}],
            max_tokens=n,
            extra_body={"recipe": spec},
        )
        assert r.choices[0].message.content == solo(lm, PROMPTS[1], spec, n, chat=True).text
        assert r.choices[0].finish_reason in ("stop", "length")


def test_body_temperature_and_seed_are_the_recipes(server):
    lm, url, _ = server
    r = client(url).chat.completions.create(
        model="tiny-llada",
        messages=[{"role": "user", "content": PROMPTS[2]}],
        max_tokens=32,
        temperature=1.0,
        seed=7,
        extra_body={"recipe": "vanilla"},
    )
    want = solo(lm, PROMPTS[2], "vanilla+temperature=1+seed=7", 32, chat=True)
    assert r.choices[0].message.content == want.text


def test_the_stream_concatenates_to_the_whole_text(server):
    lm, url, _ = server
    c = client(url)
    for chat in (False, True):
        kw = {"model": "tiny-llada", "max_tokens": 48, "extra_body": {"recipe": "vanilla"}}
        if chat:
            kw["messages"] = [{"role": "user", "content": PROMPTS[3]}]
            whole = c.chat.completions.create(**kw).choices[0].message.content
            parts, usage = [], None
            for ch in c.chat.completions.create(
                **kw, stream=True, stream_options={"include_usage": True}
            ):
                usage = ch.usage or usage
                if ch.choices and ch.choices[0].delta.content:
                    parts.append(ch.choices[0].delta.content)
        else:
            kw["prompt"] = next(  # a raw prompt the tiny model answers with some text
                p for p in PROMPTS if solo(lm, p, "vanilla", 48, chat=False).text
            )
            whole = c.completions.create(**kw).choices[0].text
            parts, usage = [], None
            for ch in c.completions.create(
                **kw, stream=True, stream_options={"include_usage": True}
            ):
                usage = ch.usage or usage
                if ch.choices and ch.choices[0].text:
                    parts.append(ch.choices[0].text)
        assert "".join(parts) == whole and whole
        assert (
            usage is not None
            and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        )


def test_stop_strings(server):
    lm, url, _ = server
    full = solo(lm, PROMPTS[4], "vanilla", 48, chat=True).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop and stop in full
    c = client(url)
    kw = {
        "model": "tiny-llada",
        "messages": [{"role": "user", "content": PROMPTS[4]}],
        "max_tokens": 48,
        "stop": [stop],
        "extra_body": {"recipe": "vanilla"},
    }
    r = c.chat.completions.create(**kw)
    want = solo(lm, PROMPTS[4], "vanilla", 48, chat=True, stop=[stop]).text
    assert r.choices[0].message.content == want == full.split(stop, 1)[0].strip()
    assert r.choices[0].finish_reason == "stop"
    streamed = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(**kw, stream=True)
        if ch.choices
    )
    assert streamed == want


def test_concurrent_mixed_requests_each_equal_their_solo_run(server):
    lm, url, sched = server
    recipes = ["vanilla", "fast-dllm", "cadllm", "dynamic-dllm"]
    jobs = [
        (PROMPTS[i % len(PROMPTS)], recipes[i % 4], (16, 24, 32, 48)[i // 4 % 4]) for i in range(32)
    ]
    c = client(url)

    def ask(job):
        prompt, spec, n = job
        r = c.completions.create(
            model="tiny-llada", prompt=prompt, max_tokens=n, extra_body={"recipe": spec}
        )
        return r.id, r.choices[0].text

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, jobs))
    assert len({rid for rid, _ in got}) == len(jobs)  # none lost or duplicated
    for (prompt, spec, n), (_, text) in zip(jobs, got, strict=True):
        assert text == solo(lm, prompt, spec, n, chat=False).text, (spec, n)
    assert sched.snapshot()["live_rows"] == 0


def post(url: str, body: bytes | str, path="/v1/completions") -> tuple[int, dict]:
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    "body,needle",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"prompt": 5}', "prompt must be a string"),
        ('{"prompt": "   "}', "empty prompt"),
        ('{"prompt": "' + "x " * 3000 + '"}', "exceeds"),
        ('{"prompt": "hi", "max_tokens": -3}', "max_tokens must be"),
        ('{"prompt": "hi", "max_tokens": 100000000}', "max_tokens must be"),
        ('{"prompt": "hi", "max_tokens": "ten"}', "max_tokens must be a number"),
        ('{"prompt": "hi", "temperature": NaN}', "temperature must be"),
        ('{"prompt": "hi", "recipe": "warp-speed"}', "unknown recipe"),
        ('{"prompt": "hi", "recipe": "vanilla+unmask=threshold:tau=2"}', "tau must be"),
        ('{"prompt": "hi", "n": 2}', "n = 1"),
        ('{"prompt": "hi", "stop": 3}', "stop must be"),
        ('{"prompt": "hi", "max_tokens": 8, "recipe": "vanilla+gen_len=16"}', "disagrees"),
    ],
)
def test_bad_input_gets_a_4xx_and_the_server_stays_up(server, body, needle):
    _, url, _ = server
    status, err = post(url, body)
    assert 400 <= status < 500, err
    assert needle in err["error"]["message"] and err["error"]["type"] == "invalid_request_error"
    status, ok = post(url, '{"prompt": "12+7=", "max_tokens": 8}')
    assert status == 200 and ok["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_disconnecting_stream_frees_its_row(server):
    lm, url, sched = server
    before = sched.snapshot()["requests_cancelled_total"]
    c = client(url)
    body = {"recipe": "vanilla+blocks=fixed:len=8", "stream_options": {"denoise": True}}
    stream = c.completions.create(
        model="tiny-llada", prompt=PROMPTS[5], max_tokens=256, stream=True, extra_body=body
    )
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(
            lambda: c.completions.create(
                model="tiny-llada",
                prompt=PROMPTS[6],
                max_tokens=32,
                extra_body={"recipe": "vanilla"},
            )
        )
        for k, _ in enumerate(stream):
            if k == 5:
                break
        stream.close()  # the client goes away mid-way
        text = other.result().choices[0].text
    assert text == solo(lm, PROMPTS[6], "vanilla", 32, chat=False).text
    deadline = time.time() + 20
    while sched.snapshot()["live_rows"] or sched.snapshot()["requests_cancelled_total"] == before:
        assert time.time() < deadline, sched.snapshot()
        time.sleep(0.05)
    with urllib.request.urlopen(url + "/metrics") as r:
        metrics = r.read().decode()
    assert "unmask_live_rows 0" in metrics
    assert f"unmask_requests_cancelled_total {before + 1}" in metrics


def test_models_health_and_page(server):
    _, url, _ = server
    assert [m.id for m in client(url).models.list()] == ["tiny-llada"]
    with urllib.request.urlopen(url + "/health") as r:
        assert json.loads(r.read()) == {"status": "ok"}
    with urllib.request.urlopen(url + "/") as r:
        assert "denoise" in r.read().decode()


@pytest.fixture
def small_server():
    """A server with one live row, one queue place and a 1.5 s timeout."""
    lm = load("tiny-llada")
    app = build_app(lm, "tiny-llada", "vanilla", Limits(max_rows=1, max_queue=1, timeout_s=1.5))
    with running(app) as url:
        yield url, app.state.scheduler


def test_a_full_queue_gets_429_with_retry_after(small_server):
    url, sched = small_server
    slow = json.dumps({"prompt": PROMPTS[0], "max_tokens": 512, "recipe": "vanilla"})
    deadline = time.time() + 20
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, slow)  # takes the one row
        while sched.snapshot()["live_rows"] < 1:
            assert time.time() < deadline and not first.done(), first.result()
            time.sleep(0.01)
        second = pool.submit(post, url, slow)  # takes the one queue place
        while sched.snapshot()["queue_depth"] < 1:
            assert time.time() < deadline and not second.done(), second.result()
            time.sleep(0.01)
        req = urllib.request.Request(url + "/v1/completions", slow.encode())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 429 and e.value.headers["Retry-After"] == "1"
        assert json.loads(e.value.read())["error"]["type"] == "rate_limit_error"
        # both held requests run past the 1.5 s timeout: 504, and the rows are freed
        for f in (first, second):
            status, err = f.result()
            assert status == 504 and "ran past" in err["error"]["message"]
    assert sched.snapshot()["requests_timed_out_total"] >= 1
    deadline = time.time() + 10
    while sched.snapshot()["live_rows"]:
        assert time.time() < deadline
        time.sleep(0.05)

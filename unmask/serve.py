"""`unmask serve`: an OpenAI-compatible HTTP server with continuous batching.

One scheduler thread owns the model and an Engine (engine.py). Between steps it admits queued
requests as new rows (up to --max-rows live) and drops rows that finished, timed out, or whose
client went away; each step is one forward over every live row, whatever its recipe, block or
length. No request waits for another to finish, and a request decodes the same tokens alone or
beside others (per-row state).

Streaming fits a dLLM: `delta.content` carries committed text only, the longest fully revealed
prefix of the answer, which never changes once sent. With `stream_options: {"denoise": true}`
each chunk also carries the step's reveals (position, token, confidence) for a live canvas.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections import deque
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from unmask.engine import Engine, Row
from unmask.generate import DEFAULT_BLOCK_LEN, DEFAULT_GEN_LEN
from unmask.policies.base import SpecError
from unmask.recipe import Recipe, parse

PAGE = Path(__file__).with_name("page.html")


class RequestError(ValueError):
    """A request the server refuses with a 4xx; the message is the client's to read."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass
class Limits:
    max_rows: int = 16  # live rows sharing a step
    max_queue: int = 64  # requests waiting for a row; beyond it: 429
    max_len: int | None = None  # prompt + max_tokens (None: the model's context)
    timeout_s: float = 300.0  # per request, from its arrival


@dataclass(eq=False)
class Job:
    """One request inside the scheduler: what to decode, and where its events go."""

    prompt_ids: list[int]
    recipe: Recipe
    gen_len: int
    stop: list[str]
    denoise: bool
    loop: asyncio.AbstractEventLoop
    stream: bool = True  # its client reads every step (a non-streaming one only the last)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    t0: float = field(default_factory=time.perf_counter)
    row: Row | None = None
    cancelled: bool = False
    done: bool = False

    def put(self, item: dict) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class Scheduler:
    """The one loop that owns the model: admit, step, deliver, drop."""

    def __init__(self, lm, limits: Limits, block_len: int = DEFAULT_BLOCK_LEN):
        self.lm = lm
        self.limits = limits
        self.block_len = block_len
        self.engine = Engine(lm)
        self.queue: deque[Job] = deque()
        self.jobs: dict[Row, Job] = {}
        self.cv = threading.Condition()
        self.stopped = False
        self.stats = {
            "requests_total": 0,
            "requests_rejected_total": 0,
            "requests_cancelled_total": 0,
            "requests_timed_out_total": 0,
            "requests_finished_total": 0,
            "completion_tokens_total": 0,
            "steps_total": 0,
            "nfe_sum": 0,
        }
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) for tokens/s
        self.thread = threading.Thread(target=self._run, name="unmask-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cv:
            self.stopped = True
            self.cv.notify()
        self.thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        with self.cv:
            if len(self.queue) >= self.limits.max_queue:
                self.stats["requests_rejected_total"] += 1
                raise RequestError("the server's queue is full; retry shortly", status=429)
            self.stats["requests_total"] += 1
            self.queue.append(job)
            self.cv.notify()

    def cancel(self, job: Job) -> None:
        with self.cv:
            if not job.done and not job.cancelled:
                job.cancelled = True
                self.stats["requests_cancelled_total"] += 1
            self.cv.notify()

    def snapshot(self) -> dict[str, float]:
        with self.cv:
            live = len(self.jobs)
            now = time.perf_counter()
            while self._recent and now - self._recent[0][0] > 10:
                self._recent.popleft()
            window = sum(n for _, n in self._recent) / 10
            return {
                **self.stats,
                "queue_depth": len(self.queue),
                "live_rows": live,
                "batch_occupancy": live / self.limits.max_rows,
                "tokens_per_second": window,
            }

    # ---- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self.cv:
                while not self.stopped and not self.queue and not self.jobs:
                    self.cv.wait()
                if self.stopped:
                    return
                self._reap()
                while self.queue and len(self.jobs) < self.limits.max_rows:
                    job = self.queue.popleft()
                    if job.cancelled:
                        continue
                    job.row = self.engine.add(
                        job.prompt_ids, job.recipe, job.gen_len, self.block_len
                    )
                    self.jobs[job.row] = job
            if not self.jobs:
                continue
            try:
                events = self.engine.step()
            except Exception as e:  # a failure must not take the server down with it
                with self.cv:
                    for job in self.jobs.values():
                        job.done = True
                        job.put({"error": f"decoding failed: {e}"})
                        self.engine.drop(job.row)
                    self.jobs.clear()
                continue
            by_index = {ev.batch_index: ev for ev in events}
            with self.cv:
                self.stats["steps_total"] += 1
                for row, job in list(self.jobs.items()):
                    ev = by_index.get(row.index)
                    if ev is not None and not job.cancelled and job.stream:
                        job.put({"event": ev, "row": row})
                    if row.finished and not job.cancelled:
                        self._finish(job)

    def _reap(self) -> None:
        """Drop rows whose request was cancelled or ran past its timeout (under the lock)."""
        now = time.perf_counter()
        for row, job in list(self.jobs.items()):
            if not job.cancelled and now - job.t0 > self.limits.timeout_s:
                job.cancelled = True
                self.stats["requests_timed_out_total"] += 1
                limit = f"{self.limits.timeout_s:g} s"
                job.put({"error": f"the request ran past the server's {limit}", "status": 504})
            if job.cancelled or job.done:
                self.engine.drop(row)
                del self.jobs[row]

    def _finish(self, job: Job) -> None:
        job.done = True
        row = job.row
        text, tokens, reason = committed(self.lm, row.gen_ids, job.stop, final=True)
        self.stats["requests_finished_total"] += 1
        self.stats["completion_tokens_total"] += tokens
        self.stats["nfe_sum"] += row.state.nfe
        self._recent.append((time.perf_counter(), tokens))
        job.put(
            {
                "final": True,
                "text": text,
                "completion_tokens": tokens,
                "finish_reason": reason,
                "nfe": row.state.nfe,
            }
        )


def committed(lm, gen_ids: list[int], stop: list[str], final: bool) -> tuple[str, int, str]:
    """The answer's text that can no longer change: decode the longest revealed prefix, cut at
    the first EOS/EOT and at the first stop string. Unless `final`, text that could still grow
    into a stop string, or a partial UTF-8 character, is held back. Returns the text, the tokens
    it took, and the finish reason ("stop" or "length")."""
    mask, stops = lm.args.mask_id, set(lm.stop_ids)
    prefix = []
    ended = False
    for t in gen_ids:
        if t == mask:
            break
        if t in stops:
            ended = True
            break
        prefix.append(t)
    text = lm.tokenizer.decode(prefix, skip_special_tokens=True)
    reason = "stop" if ended else "length"
    for s in stop:
        at = text.find(s)
        if at >= 0:
            text, ended, reason = text[:at], True, "stop"
    if not final and not ended:
        hold = max((len(s) - 1 for s in stop), default=0)
        if hold:
            text = text[: max(0, len(text) - hold)]
        text = text.rstrip("\ufffd")
    # As `unmask generate`: no leading or trailing whitespace; while streaming, trailing
    # whitespace waits until something follows it.
    return text.strip(), len(prefix), reason


# ---- HTTP ------------------------------------------------------------------------------------


def _error(message: str, status: int = 400, param: str | None = None, kind: str | None = None):
    kind = kind or ("rate_limit_error" if status == 429 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    headers = {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _number(body: dict, key: str, kind: type, lo: float, hi: float | None = None) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{key} must be a number, got {json.dumps(value)}", param=key)
    if kind is int and not float(value).is_integer():
        raise RequestError(f"{key} must be an integer, got {value}", param=key)
    if not math.isfinite(value) or value < lo or (hi is not None and value > hi):
        bound = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise RequestError(f"{key} must be {bound}, got {value}", param=key)
    return kind(value)


def build_app(lm, model_name: str, default_recipe: str = "fast-dllm", limits: Limits | None = None):
    """The FastAPI app: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics, /."""

    limits = limits or Limits()
    max_len = min(limits.max_len or lm.args.max_seq_len, lm.args.max_seq_len)
    parse(default_recipe)  # a bad default fails at start, not per request
    sched = Scheduler(lm, limits)

    @asynccontextmanager
    async def lifespan(app):
        sched.start()
        yield
        sched.stop()

    app = FastAPI(title="unmask", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.scheduler = sched

    async def read_body(request: Request) -> dict:
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        return body

    def make_job(body: dict, chat: bool) -> tuple[Job, dict]:
        n = _number(body, "n", int, 1)
        if n not in (None, 1):
            raise RequestError("only n = 1 is supported", param="n")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise RequestError("messages must be a non-empty list", param="messages")
            for m in messages:
                if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                    raise RequestError("each message needs a string content", param="messages")
                if m.get("role") not in ("system", "user", "assistant"):
                    raise RequestError(
                        "a message role must be system, user or assistant", "messages"
                    )
            if not any(m["content"].strip() for m in messages):
                raise RequestError("the messages are empty", param="messages")
            text = lm.tokenizer.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in messages]
            )
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise RequestError("prompt must be a string", param="prompt")
            if not prompt.strip():
                raise RequestError("empty prompt", param="prompt")
            text = prompt
        spec = body.get("recipe", default_recipe)
        if not isinstance(spec, str):
            raise RequestError("recipe must be a string spec", param="recipe")
        try:
            recipe = parse(spec)
        except SpecError as e:
            raise RequestError(str(e), param="recipe") from None
        key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        gen_len = _number(body, key, int, 1, max_len)
        if gen_len is not None and recipe.gen_len is not None and gen_len != recipe.gen_len:
            raise RequestError(
                f"{key} ({gen_len}) disagrees with the recipe's gen_len={recipe.gen_len}; "
                "give one of them",
                param=key,
            )
        gen_len = gen_len or recipe.gen_len or DEFAULT_GEN_LEN
        temperature = _number(body, "temperature", float, 0, 100)
        if temperature is not None:
            recipe.temperature = temperature
        seed = _number(body, "seed", int, 0, 2**63 - 1)
        if seed is not None:
            recipe.seed = seed
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else stop or []
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise RequestError("stop must be a string or a list of non-empty strings", param="stop")
        opts = body.get("stream_options") or {}
        if not isinstance(opts, dict):
            raise RequestError("stream_options must be an object", param="stream_options")
        ids = lm.tokenizer.encode(text)
        if len(ids) + gen_len > max_len:
            raise RequestError(
                f"prompt ({len(ids)} tokens) + max_tokens ({gen_len}) exceeds {max_len}",
                param="max_tokens",
            )
        stream = bool(body.get("stream"))
        loop = asyncio.get_running_loop()
        job = Job(ids, recipe, gen_len, stop, bool(opts.get("denoise")), loop, stream)
        meta = {"include_usage": bool(opts.get("include_usage")), "stream": stream}
        return job, meta

    def usage(job: Job, tokens: int) -> dict:
        p = len(job.prompt_ids)
        return {"prompt_tokens": p, "completion_tokens": tokens, "total_tokens": p + tokens}

    async def handle(request: Request, chat: bool):
        try:
            body = await read_body(request)
            job, meta = make_job(body, chat)
            sched.submit(job)
        except RequestError as e:
            return _error(str(e), e.status, e.param)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        name = body.get("model") or model_name

        def choice(text: str | None, reason: str | None, delta: bool) -> dict:
            if chat:
                key = "delta" if delta else "message"
                msg = {} if text is None else {"content": text}
                if not delta:
                    msg = {"role": "assistant", "content": text or ""}
                return {"index": 0, key: msg, "finish_reason": reason, "logprobs": None}
            return {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}

        if not meta["stream"]:
            try:
                while True:
                    item = await job.events.get()
                    if "error" in item:
                        return _error(item["error"], item.get("status", 500), kind="server_error")
                    if item.get("final"):
                        break
            except asyncio.CancelledError:
                sched.cancel(job)
                raise
            return JSONResponse(
                {
                    "id": rid,
                    "object": kind,
                    "created": created,
                    "model": name,
                    "choices": [choice(item["text"], item["finish_reason"], False)],
                    "usage": usage(job, item["completion_tokens"]),
                    "nfe": item["nfe"],
                }
            )

        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list, **extra) -> str:
            data = {"id": rid, "object": chunk_kind, "created": created, "model": name}
            return "data: " + json.dumps({**data, "choices": choices, **extra}) + "\n\n"

        async def stream():
            sent = ""
            try:
                if chat:
                    yield chunk(
                        [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ]
                    )
                while True:
                    item = await job.events.get()
                    if "error" in item:
                        yield (
                            "data: "
                            + json.dumps(
                                {"error": {"message": item["error"], "type": "server_error"}}
                            )
                            + "\n\n"
                        )
                        return
                    if item.get("final"):
                        text = item["text"]
                        if text[len(sent) :]:
                            yield chunk([choice(text[len(sent) :], None, True)])
                        yield chunk([choice(None if chat else "", item["finish_reason"], True)])
                        if meta["include_usage"]:
                            yield chunk([], usage=usage(job, item["completion_tokens"]))
                        yield "data: [DONE]\n\n"
                        return
                    ev, row = item["event"], item["row"]
                    text, _, _ = committed(lm, row.gen_ids, job.stop, final=False)
                    extra = {}
                    if job.denoise:
                        extra["denoise"] = denoise(lm, ev, row)
                    new = text[len(sent) :] if text.startswith(sent) else ""
                    if new or extra:  # (no new text: an empty delta)
                        yield chunk([choice(new or None, None, True)], **extra)
                        sent += new
            finally:
                if not job.done:
                    sched.cancel(job)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "unmask"}],
        }

    @app.get("/health")
    async def health():
        alive = sched.thread.is_alive()
        return JSONResponse(
            {"status": "ok" if alive else "down"}, status_code=200 if alive else 503
        )

    @app.get("/metrics")
    async def metrics():
        s = sched.snapshot()
        lines = []
        for key, value in s.items():
            name = f"unmask_{key}"
            kind = "counter" if key.endswith("_total") or key == "nfe_sum" else "gauge"
            lines += [f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def page():
        return HTMLResponse(PAGE.read_text())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return _error(str(exc))

    return app


@contextmanager
def running(app, host: str = "127.0.0.1", timeout_s: float = 30.0):
    """Serve `app` on a free port of `host` in a background thread (tests, load scripts,
    embedding); yields its base URL and stops it on exit."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout_s
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def denoise(lm, ev, row: Row) -> dict:
    """This step's reveals for the live canvas: generated offsets, token ids and text, and their
    confidence; plus where the block is."""
    offs = torch.arange(ev.block.start, ev.block.end)[ev.reveal[0].cpu()]
    cand = ev.cand[0][ev.reveal[0]].tolist()
    conf = ev.conf[0][ev.reveal[0]].float().tolist()
    return {
        "step": ev.step,
        "gen_len": row.G,
        "block": [ev.block.start, ev.block.end],
        "revealed": [
            [int(p), int(t), lm.tokenizer.decode([t]), round(c, 4)]
            for p, t, c in zip(offs.tolist(), cand, conf, strict=True)
        ],
    }

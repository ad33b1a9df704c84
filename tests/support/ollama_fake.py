"""A fast fake Ollama server with no model, for tests and benchmarks.

It speaks Ollama's native API (/api/chat, /api/generate, /api/embed, /api/tags, /api/ps, /api/show,
/api/version) and Ollama's OpenAI-compatible /v1 (chat/completions with SSE and include_usage, embeddings,
models), checked against the official `ollama` client by tests/llm/test_contract.py.

Behaviour you can rely on:
  * fixed token rate per request (`token_rate` tokens/s), optional delay before the first token (`ttft_s`);
  * `slots` concurrent generations; further requests wait for a slot, like Ollama's own queue;
    `stats()["max_active"]` tells the most generations that ever ran at once;
  * exact, known usage: the reply is `reply_tokens` words ("w0 w1 ...", capped by num_predict/max_tokens), one
    word per token, eval_count = words sent; prompt_eval_count = `prompt_tokens(messages)` (words + 1 per
    message). `stats()` sums what the server reported for completed calls;
  * a context window like Ollama's: a prompt longer than options.num_ctx (else `default_num_ctx`) is refused
    with HTTP 400 "request (N tokens) exceeds the available context size (M tokens)" when the request says
    truncate=false (/v1: OpenAI's context_length_exceeded), else silently cut (`stats()["truncated"]`);
    /api/show reports `context_length` as the model's trained context;
  * `block_probes_while_busy`: metadata endpoints (/api/version, /api/tags, /api/ps, /api/show, /v1/models) wait
    while a generation runs, as llama-cpp-python's server does with its model lock;
  * failure modes via `fail(mode, times=None)` until `heal()` (or for the next `times` requests):
      "refuse"  stop listening: connections are refused (existing ones dropped);
      "http500" generation and embed requests answer HTTP 500;
      "stall"   headers are sent, then nothing, until the client gives up;
      "die"     the connection drops after `die_after` tokens (mid-stream);
    and `kill()` (the process dies for good: SIGKILL in subprocess mode).

Two ways to run it:

    with FakeOllama(token_rate=200, slots=1) as fake:        # in a thread of this process
        fake.url, fake.fail("http500", times=1), fake.stats()
    with FakeOllamaProcess(token_rate=200, slots=1) as fake:  # in its own process (benchmarks, kill tests)
        ... same methods, driven over /_fake/* control endpoints

    python -m tests.support.ollama_fake --port 0 --token-rate 50 --slots 1   # prints "LISTENING <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import httpx

from tests.support.httpmini import MiniHTTPServer, Request, Response
from tests.support.process import ServerProcess

DEFAULT_MODELS = ("fake:latest", "fake-embed:latest")
VERSION = "0.12.0-fake"


def prompt_tokens(messages: list[dict]) -> int:
    """The prompt_eval_count the fake reports for these messages."""
    return sum(len(str(m.get("content") or "").split()) + 1 for m in messages)


def text_tokens(text: str) -> int:
    return len(text.split()) + 1


def reply_words(n: int) -> list[str]:
    return [f"w{i}" if i == 0 else f" w{i}" for i in range(n)]


def embedding_for(text: str, dim: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [((digest[i % len(digest)] / 255.0) * 2 - 1) for i in range(dim)]


def _normalize(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakeConfig:
    token_rate: float = 200.0
    ttft_s: float = 0.0
    reply_tokens: int = 8
    slots: int = 1
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    embed_dim: int = 8
    die_after: int = 2  # "die": tokens sent before the connection drops
    stall_after: int = 0  # "stall": tokens sent before the stream goes silent (0: before the first token)
    api_key: str = ""  # when set, /v1 requires "Authorization: Bearer <api_key>"
    report_usage: bool = True  # False: like llama.cpp streams, no token counts in the final chunk
    cached_tokens: int = 0  # /v1 only: prompt_tokens_details.cached_tokens reported (OpenAI prompt caching)
    loaded: list[str] | None = None  # models /api/ps lists (None: all of `models`)
    context_length: int = 32768  # the trained context /api/show reports (0: not reported)
    default_num_ctx: int = 4096  # the window without options.num_ctx (Ollama's default)
    block_probes_while_busy: bool = False


@dataclass
class FakeStats:
    requests: int = 0  # generation + embed requests received
    completed: int = 0  # finished with a done/usage report
    failed: int = 0  # answered by an injected failure
    prompt_tokens: int = 0  # sums of what was reported for completed calls
    output_tokens: int = 0
    sent_tokens: int = 0  # reply tokens of completed calls, reported or not
    active: int = 0
    max_active: int = 0
    by_path: dict = field(default_factory=dict)
    last_body: dict = field(default_factory=dict)  # JSON body of the last generation / embed request
    truncated: int = 0  # prompts silently cut to the window (no truncate=false)
    refused_context: int = 0  # prompts refused as longer than the window
    probes_waited: int = 0  # metadata requests that waited for a running generation (block_probes_while_busy)


class FakeOllamaApp:
    """The protocol logic; runs inside an event loop (thread or subprocess)."""

    def __init__(self, config: FakeConfig):
        self.config = config
        self.stats = FakeStats()
        self.mode: str | None = None
        self.mode_left: int | None = None
        self.sem = asyncio.Semaphore(config.slots)
        self.http = MiniHTTPServer(self.handle)
        self._heal_event = asyncio.Event()

    # -- control --
    async def set_failure(self, mode: str | None, times: int | None = None) -> None:
        self.mode, self.mode_left = mode, times
        if mode == "refuse":
            await self.http.stop_listening()
        elif not self.http.listening:
            await self.http.start()
        if mode is None:
            self._heal_event.set()
            self._heal_event = asyncio.Event()

    def configure(self, **changes) -> None:
        for name, value in changes.items():
            setattr(self.config, name, value)
        if "slots" in changes:
            self.sem = asyncio.Semaphore(self.config.slots)

    def _take_failure(self) -> str | None:
        if self.mode in (None, "refuse"):
            return None
        mode = self.mode
        if self.mode_left is not None:
            self.mode_left -= 1
            if self.mode_left <= 0:
                self.mode, self.mode_left = None, None
        return mode

    # -- routing --
    async def handle(self, req: Request, resp: Response) -> None:
        self.stats.by_path[req.path] = self.stats.by_path.get(req.path, 0) + 1
        routes = {
            ("GET", "/"): self.root, ("HEAD", "/"): self.root,
            ("GET", "/api/version"): self.version, ("GET", "/api/tags"): self.tags, ("GET", "/api/ps"): self.ps,
            ("POST", "/api/show"): self.show, ("POST", "/api/chat"): self.chat, ("POST", "/api/generate"): self.generate,
            ("POST", "/api/embed"): self.embed, ("POST", "/api/embeddings"): self.embeddings_legacy,
            ("GET", "/v1/models"): self.v1_models, ("POST", "/v1/chat/completions"): self.v1_chat,
            ("POST", "/v1/embeddings"): self.v1_embeddings,
            ("GET", "/_fake/stats"): self.ctl_stats, ("POST", "/_fake/fail"): self.ctl_fail,
            ("POST", "/_fake/heal"): self.ctl_heal, ("POST", "/_fake/config"): self.ctl_config,
        }
        route = routes.get((req.method, req.path))
        if route is None:
            await resp.send(404, b"404 page not found", "text/plain")
            return
        if req.path in self.PROBE_PATHS and self.config.block_probes_while_busy and self.stats.active:
            self.stats.probes_waited += 1
            while self.stats.active:
                await asyncio.sleep(0.01)
        await route(req, resp)

    PROBE_PATHS = frozenset({"/api/version", "/api/tags", "/api/ps", "/api/show", "/v1/models"})

    # -- control endpoints (subprocess mode) --
    async def ctl_stats(self, req, resp):
        await resp.send_json(asdict(self.stats))

    async def ctl_fail(self, req, resp):
        data = req.json()
        await resp.send_json({"ok": True})
        await self.set_failure(data.get("mode"), data.get("times"))

    async def ctl_heal(self, req, resp):
        await self.set_failure(None)
        await resp.send_json({"ok": True})

    async def ctl_config(self, req, resp):
        self.configure(**req.json())
        await resp.send_json(asdict(self.config))

    # -- metadata --
    async def root(self, req, resp):
        await resp.send(200, b"Ollama is running", "text/plain; charset=utf-8")

    async def version(self, req, resp):
        await resp.send_json({"version": VERSION})

    def _model_entry(self, name: str, *, running: bool = False) -> dict:
        entry = {
            "name": name, "model": name, "modified_at": _now(), "size": 1000,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "gguf", "family": "fake", "families": ["fake"],
                        "parameter_size": "1M", "quantization_level": "Q4_0"},
        }
        if running:
            entry.update(expires_at=_now(), size_vram=0, context_length=4096)
        return entry

    async def tags(self, req, resp):
        await resp.send_json({"models": [self._model_entry(m) for m in self.config.models]})

    async def ps(self, req, resp):
        loaded = self.config.models if self.config.loaded is None else self.config.loaded
        await resp.send_json({"models": [self._model_entry(m, running=True) for m in loaded]})

    async def show(self, req, resp):
        name = _normalize(req.json().get("model") or req.json().get("name") or "")
        if name not in self.config.models:
            await resp.send_json({"error": f"model '{name}' not found"}, 404)
            return
        model_info = {"general.architecture": "fake"}
        if self.config.context_length:
            model_info["fake.context_length"] = self.config.context_length
        await resp.send_json({"modelfile": "FROM fake", "parameters": "", "template": "{{ .Prompt }}",
                              "details": self._model_entry(name)["details"], "model_info": model_info,
                              "capabilities": ["completion"], "modified_at": _now()})

    # -- generation --
    def _known(self, model: str) -> bool:
        return _normalize(model or "") in self.config.models

    async def _failure_response(self, resp: Response, mode: str, *, ndjson: bool) -> bool:
        """Handle an injected failure that acts before the stream; True when the request is done."""
        if mode == "http500":
            self.stats.failed += 1
            await resp.send_json({"error": "fake: injected server error"}, 500)
            return True
        if mode == "stall":
            self.stats.failed += 1
            await resp.start_stream("application/x-ndjson" if ndjson else "text/event-stream")
            heal = self._heal_event
            try:
                await asyncio.wait_for(heal.wait(), 3600)
            finally:
                resp.abort()
            return True
        return False

    async def _generate(self, req: Request, resp: Response, *, kind: str) -> None:
        """kind: chat | generate | v1"""
        data = req.json()
        model = data.get("model", "")
        self.stats.requests += 1
        self.stats.last_body = data
        if kind == "v1" and self.config.api_key and req.headers.get("authorization") != f"Bearer {self.config.api_key}":
            await resp.send_json({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                            "code": "invalid_api_key"}}, 401)
            return
        if not self._known(model):
            if kind == "v1":
                await resp.send_json({"error": {"message": f"model '{model}' not found", "type": "api_error"}}, 404)
            else:
                await resp.send_json({"error": f"model '{model}' not found, try pulling it first"}, 404)
            return
        mode = self._take_failure()
        if mode and (mode != "stall" or not self.config.stall_after) and await self._failure_response(
                resp, mode, ndjson=kind != "v1"):
            return
        if kind == "generate":
            messages = [{"content": data.get("prompt", "")}] + ([{"content": data["system"]}] if data.get("system") else [])
        else:
            messages = data.get("messages") or []
        stream = data.get("stream", kind != "v1")
        options = data.get("options") or {}
        limit = options.get("num_predict") if kind != "v1" else (data.get("max_completion_tokens")
                                                                 or data.get("max_tokens"))
        n = self.config.reply_tokens if limit in (None, -1) else max(0, min(self.config.reply_tokens, int(limit)))
        words = reply_words(n)
        if data.get("format") or (data.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
            words = ['{"answer": ', '"fake"}']
        p_tokens = prompt_tokens(messages)
        window = int(options.get("num_ctx") or self.config.default_num_ctx)
        if p_tokens > window:
            if kind == "v1" or data.get("truncate") is False:
                self.stats.refused_context += 1
                await self._refuse_context(resp, kind, p_tokens, window)
                return
            self.stats.truncated += 1
            p_tokens = window
        reason = "length" if limit not in (None, -1) and n < self.config.reply_tokens else "stop"
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        async with self.sem:
            self.stats.active += 1
            self.stats.max_active = max(self.stats.max_active, self.stats.active)
            try:
                await self._emit(resp, kind, model, words, p_tokens, reason, stream, include_usage,
                                 die=mode == "die", stall=mode == "stall")
            finally:
                self.stats.active -= 1

    @staticmethod
    async def _refuse_context(resp: Response, kind: str, p_tokens: int, window: int) -> None:
        if kind == "v1":
            await resp.send_json({"error": {
                "message": f"This model's maximum context length is {window} tokens. However, your messages "
                           f"resulted in {p_tokens} tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}, 400)
            return
        # What Ollama (truncate=false) passes on from its llama.cpp runner.
        inner = {"error": {"code": 400, "message": f"request ({p_tokens} tokens) exceeds the available context size "
                                                    f"({window} tokens), try increasing it",
                           "type": "exceed_context_size_error", "n_prompt_tokens": p_tokens, "n_ctx": window}}
        await resp.send_json({"error": json.dumps(inner)}, 400)

    async def _emit(self, resp, kind, model, words, p_tokens, reason, stream, include_usage, *, die,
                    stall=False) -> None:
        started = time.perf_counter_ns()
        if self.config.ttft_s:
            await asyncio.sleep(self.config.ttft_s)
        interval = 1.0 / self.config.token_rate if self.config.token_rate > 0 else 0.0
        cid = "chatcmpl-fake"
        created = int(time.time())
        if stream:
            await resp.start_stream("application/x-ndjson" if kind != "v1" else "text/event-stream")
        next_at = time.perf_counter()
        for i, word in enumerate(words):
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if die and i >= self.config.die_after:
                self.stats.failed += 1
                resp.abort()
                return
            if stall and i >= self.config.stall_after:
                self.stats.failed += 1
                heal = self._heal_event
                try:
                    await asyncio.wait_for(heal.wait(), 3600)
                finally:
                    resp.abort()
                return
            if not stream:
                continue
            if kind == "v1":
                chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {"role": "assistant", "content": word} if i == 0
                                      else {"content": word}, "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            elif kind == "chat":
                await resp.write(json.dumps({"model": model, "created_at": _now(), "message": {
                    "role": "assistant", "content": word}, "done": False}).encode() + b"\n")
            else:
                await resp.write(json.dumps({"model": model, "created_at": _now(), "response": word,
                                             "done": False}).encode() + b"\n")
        if die:  # died before the end of a short reply
            self.stats.failed += 1
            resp.abort()
            return
        n = len(words)
        total_ns = time.perf_counter_ns() - started
        report = self.config.report_usage
        self.stats.completed += 1
        self.stats.sent_tokens += n
        if report and (kind != "v1" or not stream or include_usage):
            self.stats.prompt_tokens += p_tokens
            self.stats.output_tokens += n
        if kind == "v1":
            usage = {"prompt_tokens": p_tokens, "completion_tokens": n, "total_tokens": p_tokens + n}
            if self.config.cached_tokens:
                usage["prompt_tokens_details"] = {"cached_tokens": min(self.config.cached_tokens, p_tokens)}
            include_usage = include_usage and report
            if stream:
                final = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
                await resp.write(b"data: " + json.dumps(final).encode() + b"\n\n")
                if include_usage:
                    await resp.write(b"data: " + json.dumps({"id": cid, "object": "chat.completion.chunk",
                                                             "created": created, "model": model, "choices": [],
                                                             "usage": usage}).encode() + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
                await resp.end_stream()
            else:
                await resp.send_json({"id": cid, "object": "chat.completion", "created": created, "model": model,
                                      "choices": [{"index": 0, "message": {"role": "assistant",
                                                                           "content": "".join(words)},
                                                   "finish_reason": reason}], "usage": usage})
            return
        final = {"model": model, "created_at": _now(), "done": True, "done_reason": reason,
                 "total_duration": total_ns, "load_duration": 0}
        if report:
            final.update(prompt_eval_count=p_tokens, prompt_eval_duration=1000, eval_count=n,
                         eval_duration=max(total_ns - 1000, 1))
        if kind == "chat":
            final["message"] = {"role": "assistant", "content": "" if stream else "".join(words)}
        else:
            final["response"] = "" if stream else "".join(words)
            final["context"] = [1, 2, 3]
        if stream:
            await resp.write(json.dumps(final).encode() + b"\n")
            await resp.end_stream()
        else:
            await resp.send_json(final)

    async def chat(self, req, resp):
        await self._generate(req, resp, kind="chat")

    async def generate(self, req, resp):
        await self._generate(req, resp, kind="generate")

    async def v1_chat(self, req, resp):
        await self._generate(req, resp, kind="v1")

    async def _embed_common(self, req: Request, resp: Response, *, v1: bool):
        data = req.json()
        self.stats.requests += 1
        self.stats.last_body = data
        if v1 and self.config.api_key and req.headers.get("authorization") != f"Bearer {self.config.api_key}":
            await resp.send_json({"error": {"message": "Incorrect API key provided"}}, 401)
            return None
        if not self._known(data.get("model", "")):
            body = ({"error": {"message": "model not found"}} if v1
                    else {"error": f"model '{data.get('model')}' not found, try pulling it first"})
            await resp.send_json(body, 404)
            return None
        mode = self._take_failure()
        if mode in ("http500", "die"):
            self.stats.failed += 1
            await resp.send_json({"error": "fake: injected server error"}, 500)
            return None
        if mode == "stall":
            await self._failure_response(resp, "stall", ndjson=False)
            return None
        texts = data.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        async with self.sem:
            self.stats.active += 1
            self.stats.max_active = max(self.stats.max_active, self.stats.active)
            try:
                if self.config.token_rate > 0:
                    await asyncio.sleep(min(0.05, len(texts) / self.config.token_rate / 10))
            finally:
                self.stats.active -= 1
        count = sum(text_tokens(t) for t in texts)
        self.stats.completed += 1
        self.stats.prompt_tokens += count
        return data.get("model"), texts, count

    async def embed(self, req, resp):
        got = await self._embed_common(req, resp, v1=False)
        if got is None:
            return
        model, texts, count = got
        await resp.send_json({"model": model, "embeddings": [embedding_for(t, self.config.embed_dim) for t in texts],
                              "total_duration": 1000, "load_duration": 0, "prompt_eval_count": count})

    async def embeddings_legacy(self, req, resp):
        data = req.json()
        await resp.send_json({"embedding": embedding_for(data.get("prompt", ""), self.config.embed_dim)})

    async def v1_models(self, req, resp):
        if self.config.api_key and req.headers.get("authorization") != f"Bearer {self.config.api_key}":
            await resp.send_json({"error": {"message": "Incorrect API key provided"}}, 401)
            return
        await resp.send_json({"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                          "owned_by": "library"} for m in self.config.models]})

    async def v1_embeddings(self, req, resp):
        got = await self._embed_common(req, resp, v1=True)
        if got is None:
            return
        model, texts, count = got
        await resp.send_json({"object": "list", "model": model, "data": [
            {"object": "embedding", "index": i, "embedding": embedding_for(t, self.config.embed_dim)}
            for i, t in enumerate(texts)], "usage": {"prompt_tokens": count, "total_tokens": count}})


class FakeOllama:
    """The fake in a background thread of this process (its own event loop)."""

    def __init__(self, **config):
        self.config = FakeConfig(**config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-ollama", daemon=True)
        self._thread.start()
        self.app: FakeOllamaApp = self._call(self._make())
        self.port = self.app.http.port
        self.url = f"http://127.0.0.1:{self.port}"

    async def _make(self) -> FakeOllamaApp:
        app = FakeOllamaApp(self.config)
        await app.http.start()
        return app

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def fail(self, mode: str, times: int | None = None) -> None:
        self._call(self.app.set_failure(mode, times))

    def heal(self) -> None:
        self._call(self.app.set_failure(None))

    def configure(self, **changes) -> None:
        self._loop.call_soon_threadsafe(lambda: self.app.configure(**changes))
        self._call(asyncio.sleep(0))

    def stats(self) -> dict:
        return asdict(self.app.stats)

    def kill(self) -> None:
        self._call(self.app.http.stop_listening())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.app.set_failure(None))
            self._call(self.app.http.stop_listening())
        except Exception:  # noqa: BLE001
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeOllamaProcess(ServerProcess):
    """The fake in its own Python process (benchmarks; `kill()` is a real SIGKILL)."""

    stop_timeout_s = 5

    def __init__(self, port: int = 0, **config):
        self.config = FakeConfig(**config)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ollama_fake", "--port", str(port), "--config",
             json.dumps(asdict(self.config))],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"fake Ollama did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def _post(self, path: str, body: dict) -> dict:
        return httpx.post(self.url + path, json=body, timeout=5).json()

    def fail(self, mode: str, times: int | None = None) -> None:
        if mode == "refuse":
            with contextlib.suppress(httpx.HTTPError):
                self._post("/_fake/fail", {"mode": mode, "times": times})
            return
        self._post("/_fake/fail", {"mode": mode, "times": times})

    def heal(self) -> None:
        self._post("/_fake/heal", {})

    def configure(self, **changes) -> None:
        self._post("/_fake/config", changes)

    def stats(self) -> dict:
        return httpx.get(self.url + "/_fake/stats", timeout=5).json()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)



async def _serve_forever(port: int, config: FakeConfig, host: str = "127.0.0.1") -> None:
    app = FakeOllamaApp(config)
    app.http.host, app.http.port = host, port
    await app.http.start()
    print(f"LISTENING {app.http.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Ollama server (no model) for tests and benchmarks")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0: other containers too (scripts/stack-test)")
    parser.add_argument("--config", default="{}", help="FakeConfig fields as JSON")
    parser.add_argument("--token-rate", type=float)
    parser.add_argument("--slots", type=int)
    parser.add_argument("--reply-tokens", type=int)
    args = parser.parse_args(argv)
    config = FakeConfig(**json.loads(args.config))
    for name in ("token_rate", "slots", "reply_tokens"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_forever(args.port, config, args.host))
    else:
        uvloop.run(_serve_forever(args.port, config, args.host))


if __name__ == "__main__":
    main()

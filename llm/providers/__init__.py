"""Provider adapters: each maps the gateway's one request model onto a wire protocol and back."""

from llm.providers import ollama
from llm.providers.base import Delta, Done, ProbeResult, ProviderError


def adapter_for(kind: str):
    if kind == "ollama":
        return ollama
    if kind == "openai":
        # Only on first use: it imports the openai SDK (~1.5 s), which processes without such a pool never need.
        from llm.providers import openai_compat

        return openai_compat
    raise ValueError(f"unknown provider kind {kind!r}")


__all__ = ["Delta", "Done", "ProbeResult", "ProviderError", "adapter_for"]

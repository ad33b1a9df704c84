"""Provider adapters: each maps the gateway's one request model onto a wire protocol and back."""

from llm.providers.base import Delta, Done, ProbeResult, ProviderError


def adapter_for(kind: str):
    if kind == "ollama":
        from llm.providers import ollama

        return ollama
    if kind == "openai":
        from llm.providers import openai_compat

        return openai_compat
    raise ValueError(f"unknown provider kind {kind!r}")


__all__ = ["Delta", "Done", "ProbeResult", "ProviderError", "adapter_for"]

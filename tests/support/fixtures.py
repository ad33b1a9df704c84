"""Pytest fixtures for code that calls models through the gateway (loaded for every test via tests/conftest.py).

    def test_answer(tenant_a, fake_llm):
        result = chat_sync(tenant=tenant_a.tenant, target=fake_llm.target, request=..., usage=...)
        assert result.usage.output_tokens == fake_llm.stats()["output_tokens"]

fake_llm          a pool "fake" of one single-slot fake Ollama server, registered with the gateway;
                  `.target` ("fake/fake"), `.embed_target` ("fake/fake-embed"), `.servers`, `.stats()` (summed),
                  `.fail(mode, times=None)` / `.heal()` on every server. Configure with the `fake_llm_config`
                  fixture (override it in your module: servers=3, slots=2, token_rate=..., reply_tokens=...).
fake_ollama       factory: `fake_ollama(**FakeConfig fields)` -> a started FakeOllama (closed after the test).
fake_pool         factory: `fake_pool(name, servers, strategy="least_busy", **PoolSpec fields)` -> target prefix;
                  registers a pool over FakeOllama servers (unregistered after the test).
llm_state_clean   empties the gateway's Redis state before and after the test.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from tests.support.ollama_fake import FakeOllama


def pool_spec(name: str, servers, *, strategy: str = "least_busy", kind: str = "ollama", dialect: str = "",
              api_key: str = "", slots: int | None = None, weights: list[float] | None = None, **fields):
    """A PoolSpec over fake servers (FakeOllama or FakeOllamaProcess); each server gets a fresh state id."""
    from llm.registry import PoolSpec, ServerSpec

    tag = uuid.uuid4().hex[:6]
    specs = []
    for i, fake in enumerate(servers):
        base = fake.url + ("/v1" if kind == "openai" else "")
        specs.append(ServerSpec(sid=f"fake:{name}:{fake.port}:{tag}", name=f"{name}-{i}", base_url=base,
                                api_key=api_key, weight=(weights[i] if weights else 1.0),
                                slots=slots or getattr(getattr(fake, "config", None), "slots", 1)))
    fields.setdefault("queue_timeout_s", 30.0)
    fields.setdefault("connect_timeout_s", 1.0)
    fields.setdefault("first_token_timeout_s", 10.0)
    fields.setdefault("idle_timeout_s", 10.0)
    return PoolSpec(name=name, kind=kind, dialect=dialect or ("generic" if kind == "openai" else ""),
                    strategy=strategy, servers=tuple(specs), source="static", label=f"fake {name}",
                    models=("fake",), **fields)


@dataclass
class FakeLLM:
    servers: list[FakeOllama]
    pool: object
    target: str = "fake/fake"
    embed_target: str = "fake/fake-embed"
    extra: list = field(default_factory=list)

    def stats(self) -> dict:
        total: dict = {}
        for server in self.servers:
            for name, value in server.stats().items():
                if isinstance(value, int):
                    total[name] = total.get(name, 0) + value
        return total

    def fail(self, mode: str, times: int | None = None) -> None:
        for server in self.servers:
            server.fail(mode, times)

    def heal(self) -> None:
        for server in self.servers:
            server.heal()


@pytest.fixture
def llm_state_clean():
    from llm import state

    state.reset_all()
    yield
    state.reset_all()


@pytest.fixture
def fake_ollama():
    started: list[FakeOllama] = []

    def start(**config) -> FakeOllama:
        server = FakeOllama(**config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def fake_pool(llm_state_clean):
    from llm import registry

    names: list[str] = []

    def register(name: str, servers, **kwargs) -> str:
        registry.register_pool(pool_spec(name, servers, **kwargs))
        names.append(name)
        return name

    yield register
    for name in names:
        registry.unregister_pool(name)


@pytest.fixture
def fake_llm_config() -> dict:
    """Override in a test module to shape `fake_llm`: servers, strategy, and FakeConfig fields."""
    return {}


@pytest.fixture
def fake_llm(fake_ollama, fake_pool, fake_llm_config) -> FakeLLM:
    config = dict(fake_llm_config)
    count = config.pop("servers", 1)
    strategy = config.pop("strategy", "least_busy")
    config.setdefault("token_rate", 500.0)
    servers = [fake_ollama(**config) for _ in range(count)]
    fake_pool("fake", servers, strategy=strategy)
    from llm.registry import resolve_pool

    return FakeLLM(servers=servers, pool=resolve_pool("fake"))

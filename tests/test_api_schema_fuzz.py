"""schemathesis over the served OpenAPI schema, against a live server (uvicorn + a chat worker, loopback only).

Every operation of /api/schema/ gets a few generated requests, valid and invalid (FUZZ_MAX_EXAMPLES each,
default 3; the issue's exploratory run used 20), with an API key of a tenant that has a knowledge base with a
document, an assistant, a conversation with an answer, an evaluation run, a provider and a spare API key, so
the path parameters name real objects. The DELETEs run last, in a second pass. The run fails on a 5xx, or on a
status code, content type or body that the schema does not describe.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from accounts.tenancy import tenant_scope
from tests.chat.live import live_stack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

# FUZZ_MAX_EXAMPLES, FUZZ_SEED and FUZZ_PATHS (a path regex) widen or narrow the run when exploring.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "3"))
SEED = int(os.environ.get("FUZZ_SEED", "12"))
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
LOOPBACK = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


@pytest.fixture
def loopback_only(monkeypatch):
    """Names other than loopback do not resolve in this process (the server runs in it): whatever URL the
    fuzzer makes up, e.g. a provider's base_url, nothing leaves the machine."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK and not str(name).startswith("127."):
            raise socket.gaierror(socket.EAI_NONAME, "fuzz test: loopback only")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def world(tenant_a, fake_llm, settings, monkeypatch):
    """Objects for every path parameter. Answers come from the extractive engine or the loopback fake model."""
    from accounts.services import api_key_create
    from chat.services import assistant_create
    from knowledge.search.types import SearchHit, SearchResult
    from llm.services import tenant_provider_create
    from tests.crosstenant import BUILDERS
    from tests.factories.chat import AnswerFactory, ConversationFactory
    from tests.factories.search import make_indexed_document, make_search_kb

    settings.LLM_ANSWER_TARGET = settings.LLM_CHEAP_TARGET = fake_llm.target
    settings.LLM_ALLOWED_PRIVATE_NETWORKS = ["127.0.0.0/8"]  # the provider below: a closed loopback port
    settings.CHAT_QUEUE_TIMEOUT_S = 20
    tenant = tenant_a.tenant
    text = "Refunds are possible within 30 days of purchase. Shipping takes five working days."
    with tenant_scope(tenant):
        kb = make_search_kb(tenant, name="Fuzz handbook")
        document = make_indexed_document(tenant, kb, [text], title="Refund policy")
        assistant = assistant_create(tenant=tenant, name="Fuzz desk", answer_mode="extractive",
                                     knowledge_bases=[kb.pk])
        conversation = ConversationFactory(tenant=tenant, assistant=assistant, user=None)
        answer = AnswerFactory(tenant=tenant, conversation=conversation)
        spare_key, _raw = api_key_create(tenant=tenant, name="spare", scopes=["read"])
        provider = tenant_provider_create(tenant=tenant, name="loopback", base_url="http://127.0.0.1:9/v1",
                                          api_key="sk-fuzz-0000000000000000", models=["m"])
        ids = {
            "kb_id": kb.pk, "document_id": document.pk, "assistant_id": assistant.pk,
            "conversation_id": conversation.pk, "message_id": answer.pk, "key_id": spare_key.pk,
            "provider_id": provider.pk, "eval_question_id": BUILDERS["eval_question_id"](tenant_a),
            "eval_run_id": BUILDERS["eval_run_id"](tenant_a),
        }
        chunk = document.chunks.get()
    hit = SearchHit(chunk_id=chunk.pk, document_id=document.pk, kb_id=kb.pk,
                    document_title="Refund policy", text=text, ordinal=0, page=None, score=1.0, bm25_score=1.0,
                    bm25_rank=1)
    # Chat's retrieval returns the document (no embedding of fuzzed questions); the search API stays real.
    monkeypatch.setattr("chat.retrieval.retrieve",
                        lambda *, tenant, assistant, query, usage=None: SearchResult(query=query, hits=[hit]))
    return ids


def schemathesis_run(tmp_path, url: str, key: str, ids: dict, *, methods: str, name: str) -> dict:
    """One `st run` (the CLI, in a subprocess) over the operations whose method matches `methods`."""
    config = tmp_path / f"{name}.toml"
    lines = [
        f'base-url = "{url}"',
        "request-timeout = 30",
        "max-stream-events = 100",
        "continue-on-failure = true",
        f"seed = {SEED}",
        'suppress-health-check = ["all"]',
        "[headers]",
        f'Authorization = "Bearer {key}"',
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "[phases.stateful]",
        "enabled = false",  # objects are named by the parameters below, not discovered through links
        "[checks]",
        "enabled = false",
        *[f"{check}.enabled = true" for check in CHECKS],
        "[parameters]",
        *[f'"path.{name}" = {value}' for name, value in ids.items()],
    ]
    config.write_text("\n".join(lines) + "\n")
    report = tmp_path / f"{name}.json"
    command = [os.path.join(os.path.dirname(sys.executable), "st"), "--config-file", str(config), "run",
               f"{url}/api/schema/?format=json", "--workers", "1", "--include-method-regex", methods,
               "--report", "json", "--report-json-path", str(report), "--output-truncate", "false"]
    if os.environ.get("FUZZ_PATHS"):  # e.g. FUZZ_PATHS=/messages/ to look at some operations only
        command += ["--include-path-regex", os.environ["FUZZ_PATHS"]]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    (tmp_path / f"{name}.log").write_text(done.stdout + done.stderr)
    result = json.loads(report.read_text()) if report.exists() else {}
    result["_output"] = done.stdout + done.stderr[-5000:]
    result["_returncode"] = done.returncode
    return result


def test_the_api_keeps_to_its_schema_under_fuzzing(tmp_path, tenant_a, world, loopback_only):
    with live_stack(queues=("chat",)) as url:
        first = schemathesis_run(tmp_path, url, tenant_a.api_key, world, methods="^(GET|POST|PUT|PATCH)$",
                                 name="changes")
        deletes = schemathesis_run(tmp_path, url, tenant_a.api_key, world, methods="^DELETE$", name="deletes")
    for run in (first, deletes):
        assert run["_returncode"] == 0, run["_output"]

"""Issue 11 §5 and the UI side of answer modes: every answer shows the sources it was given (cited first, "no
citations" when it cites none), says what wrote it, shows its warnings; the steps of a pending answer stream
as SSE events from the moment the question is posted; usage is "estimated" only when a provider gave no counts."""

from __future__ import annotations

import re

import pytest

from accounts.tenancy import tenant_scope
from chat import pipeline, services, streams
from chat.models import AnswerMode, Message
from chat.payloads import message_payload
from tests.chat.test_sse import parse
from tests.conftest import web_client

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def source(n: int, title: str, snippet: str, **extra) -> dict:
    return {"n": n, "chunk_id": 100 + n, "document_id": 200 + n, "kb_id": 1, "title": title, "page": None,
            "heading": "", "snippet": snippet, **extra}


SOURCES = [source(1, "Shipping guide", "Parcels leave within two days."),
           source(2, "Refund policy", "Refunds are possible within 30 days.", page=4),
           source(3, "Gift cards", "Gift cards cannot be refunded.", heading="Policies > Gift cards")]


def saved_answer(scope, assistant, **fields) -> Message:
    """A finished answer of the owner's conversation with the given fields (as a worker would have saved it)."""
    _q, answer = services.question_ask(tenant=scope.tenant, assistant=assistant, user=scope.owner,
                                       content="How long do refunds take?")
    fields.setdefault("status", Message.Status.DONE)
    Message.objects.filter(pk=answer.pk).update(**fields)
    answer.refresh_from_db()
    return answer


def source_ids(body: str, answer: Message) -> list[int]:
    return [int(n) for n in re.findall(rf'id="src-{answer.pk}-(\d+)"', body)]


# ------------------------------------------------------------------ sources in the browser

def test_every_given_source_is_listed_collapsed_cited_first(client_a, scope_a, assistant_a):
    answer = saved_answer(scope_a, assistant_a, content="Refunds take 30 days [2].", sources=SOURCES,
                          citations=[SOURCES[1]], answered_by="generative", model="llama3.2")
    body = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    block = re.search(r'<details class="sources" id="sources-\d+">.*?</details>\s*</li>\s*</ol>\s*</details>', body,
                      re.S).group(0)
    assert "<details class=\"sources\" id=\"sources-" in block and " open" not in block.split(">")[0]  # collapsed
    assert "3 sources" in block and "1 cited" in block and "no citations" not in block
    assert source_ids(body, answer) == [2, 1, 3]  # the cited one first, then the others in [n] order
    assert f'class="source cited" id="src-{answer.pk}-2"' in body
    assert f'class="source" id="src-{answer.pk}-1"' in body
    for s in SOURCES:
        assert s["title"] in block and s["snippet"] in block
    assert "Policies &gt; Gift cards" in block and "p. 4" in block
    assert f'aria-controls="src-{answer.pk}-2"' in body  # the [2] chip points at its source


def test_an_answer_that_cites_nothing_is_marked_and_still_lists_its_sources(client_a, scope_a, assistant_a):
    answer = saved_answer(scope_a, assistant_a, content="Refunds take a month.", sources=SOURCES[:2],
                          citations=[], answered_by="generative", model="llama3.2")
    body = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert "2 sources" in body and "no citations" in body
    assert source_ids(body, answer) == [1, 2]
    assert "cite-chip" not in body


def test_answers_saved_before_sources_existed_list_their_citations(client_a, scope_a, assistant_a):
    answer = saved_answer(scope_a, assistant_a, content="Refunds take 30 days [1].", sources=[],
                          citations=[SOURCES[1] | {"n": 1}])
    body = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert "1 source" in body and "1 cited" in body and source_ids(body, answer) == [1]


def test_no_sources_no_list(client_a, scope_a, assistant_a):
    answer = saved_answer(scope_a, assistant_a, content="I could not find this in the documents.", sources=[],
                          citations=[])
    body = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert 'class="sources"' not in body and "no citations" not in body


def test_pipeline_answer_keeps_every_given_chunk_as_a_source(client_a, scope_a, assistant_a, docs, reply):
    """The real pipeline (generative, fake model): two chunks given, one cited."""
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy", page=2)
    docs.add("Our office in Seoul opens at nine.", title="Office hours", page=1)
    reply("Refunds take 30 days [1].")
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, user=scope_a.owner,
                                       content="What is the refund window?")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    answer.refresh_from_db()
    assert [s["title"] for s in answer.sources] == ["Refund policy", "Office hours"]
    body = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert "2 sources" in body and "1 cited" in body and source_ids(body, answer) == [1, 2]
    assert "Office hours" in body  # given but not cited: still listed
    assert "Written by fake" in body


# ------------------------------------------------------------------ what wrote the answer, warnings

def test_badges_say_what_wrote_each_answer(client_a, scope_a, assistant_a):
    quoted = saved_answer(scope_a, assistant_a, content="> Refunds are possible within 30 days. [1]",
                          sources=SOURCES[1:2], citations=SOURCES[1:2], answered_by="extractive")
    written = saved_answer(scope_a, assistant_a, content="Thirty days [1].", sources=SOURCES[1:2],
                           citations=SOURCES[1:2], answered_by="generative", model="gpt-4o-mini")
    older = saved_answer(scope_a, assistant_a, content="Thirty days.", answered_by="")
    for answer, expected, absent in [(quoted, "Quoted from documents", "Written by"),
                                     (written, "Written by gpt-4o-mini", "Quoted from documents")]:
        fragment = client_a.get(f"/chat/messages/{answer.pk}/").content.decode()
        assert expected in fragment and absent not in fragment
    fragment = client_a.get(f"/chat/messages/{older.pk}/").content.decode()
    assert "Quoted from documents" not in fragment and "Written by" not in fragment


def test_warnings_are_visible(client_a, scope_a, assistant_a):
    warning = "The answer model was unavailable (down); answered by quoting the documents instead."
    answer = saved_answer(scope_a, assistant_a, content="> Refunds within 30 days. [1]", sources=SOURCES[1:2],
                          citations=SOURCES[1:2], answered_by="extractive", warnings=[warning])
    fragment = client_a.get(f"/chat/messages/{answer.pk}/").content.decode()
    assert 'class="answer-warnings"' in fragment and warning in fragment


def test_model_down_falls_back_to_quoting_and_the_page_says_so(client_a, scope_a, assistant_a, docs, fake_llm):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy")
    assistant_a.answer_mode = AnswerMode.GENERATIVE_FALLBACK
    assistant_a.save()
    fake_llm.fail("http500")
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, user=scope_a.owner,
                                       content="What is the refund window?")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    answer.refresh_from_db()
    assert answer.answered_by == "extractive" and answer.warnings
    fragment = client_a.get(f"/chat/messages/{answer.pk}/").content.decode()
    assert "Quoted from documents" in fragment and "quoting the documents instead" in fragment
    assert "within 30 days of purchase" in fragment


# ------------------------------------------------------------------ progress steps

def test_a_pending_answer_says_searching_right_away(client_a, assistant_a):
    response = client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "Where is the office?"}, **HTMX)
    body = response.content.decode()
    assert 'class="answer-progress"' in body and "Searching…" in body
    assert 'class="answer-warnings"' not in body and 'class="sources"' not in body


def test_posting_a_question_opens_its_stream_with_the_first_step(client_a, assistant_a, settings, monkeypatch):
    """No worker runs here (on_commit never fires in this test), yet the stream already says "searching"."""
    settings.CHAT_QUEUE_TIMEOUT_S = 0  # end the stream once it is clear no worker comes
    monkeypatch.setattr("chat.sse.IDLE_BLOCK_MS", 50)
    client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "Where is the office?"}, **HTMX)
    answer = Message.objects.get(role="assistant")
    assert [kind for _id, kind, _data in streams.history(answer.pk)] == ["meta", "step"]
    events = parse(b"".join(client_a.get(f"/chat/messages/{answer.pk}/stream?render=1")))
    assert [e["event"] for e in events[:2]] == ["meta", "step"]
    assert events[0]["data"] == {"message_id": answer.pk, "conversation_id": answer.conversation_id,
                                 "version": 1, "status": "queued"}
    assert events[1]["data"] == {"step": "searching", "label": "Searching…"}
    assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == "no_worker"


def test_steps_stream_in_order_before_the_text(client_a, scope_a, assistant_a, docs, reply):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy")
    docs.add("Gift cards cannot be refunded.", title="Gift cards")
    reply("Refunds take 30 days [1].")
    client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "Refund window?"}, **HTMX)
    answer = Message.objects.get(role="assistant")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)

    browser = parse(b"".join(client_a.get(f"/chat/messages/{answer.pk}/stream?render=1")))
    steps = [e["data"] for e in browser if e["event"] == "step"]
    labels = [s["label"] for s in steps]
    assert labels[0] == "Searching…" and labels[-2:] == ["2 sources found", "Writing…"]
    kinds = [e["event"] for e in browser]
    assert kinds.index("step") < kinds.index("token") and max(
        i for i, k in enumerate(kinds) if k == "step") < kinds.index("token")  # every step comes before the text
    assert kinds[-1] == "done"

    api = parse(b"".join(client_a.get(f"/chat/messages/{answer.pk}/stream")))
    api_steps = [e["data"] for e in api if e["event"] == "step"]
    assert api_steps[-2:] == [{"step": "sources", "count": 2}, {"step": "writing", "mode": "generative"}]
    assert all("label" not in s for s in api_steps)  # API clients get the data as published


def test_extractive_answers_say_they_are_quoting(client_a, scope_a, assistant_a, docs, llm_calls):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy")
    assistant_a.answer_mode = AnswerMode.EXTRACTIVE
    assistant_a.save()
    client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "What is the refund window?"}, **HTMX)
    answer = Message.objects.get(role="assistant")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    events = parse(b"".join(client_a.get(f"/chat/messages/{answer.pk}/stream?render=1")))
    labels = [e["data"]["label"] for e in events if e["event"] == "step"]
    assert labels[-2:] == ["1 source found", "Quoting the documents…"]
    assert llm_calls == []  # no model was asked


def test_step_labels_follow_the_page_language(client_a, scope_a, assistant_a, docs, reply):
    docs.add("환불은 구매 후 30일 이내에 가능합니다.", title="환불 정책")
    reply("30일입니다 [1].")
    client_a.post("/i18n/setlang/", {"language": "ko", "next": "/chat/"})
    client_a.post("/chat/ask", {"assistant_id": assistant_a.pk, "message": "환불 기간은?"}, **HTMX)
    answer = Message.objects.get(role="assistant")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    events = parse(b"".join(client_a.get(f"/chat/messages/{answer.pk}/stream?render=1")))
    labels = [e["data"]["label"] for e in events if e["event"] == "step"]
    assert labels[0] == "검색 중…" and labels[-2:] == ["출처 1개를 찾았습니다", "작성 중…"]
    page = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert "출처 1개" in page and "인용 1개" in page and "fake 모델이 작성" in page


# ------------------------------------------------------------------ usage "estimated"

def test_extractive_answers_are_not_marked_estimated(client_a, scope_a, assistant_a, docs):
    docs.add("Refunds are possible within 30 days of purchase.", title="Refund policy")
    assistant_a.answer_mode = AnswerMode.EXTRACTIVE
    assistant_a.save()
    _q, answer = services.question_ask(tenant=scope_a.tenant, assistant=assistant_a, user=scope_a.owner,
                                       content="What is the refund window?")
    pipeline.generate(tenant=scope_a.tenant, message_id=answer.pk)
    fragment = client_a.get(f"/chat/c/{answer.conversation_id}/").content.decode()
    assert "message-usage" in fragment  # the zero-cost ledger line is shown to admins...
    assert ">estimated<" not in fragment  # ...and it is not an estimate


def test_usage_is_estimated_only_when_counted_offline(scope_a, assistant_a):
    quoted = saved_answer(scope_a, assistant_a, answered_by="extractive", usage_estimated=True, input_tokens=0,
                          output_tokens=0)
    assert message_payload(quoted)["usage"]["estimated"] is False  # nothing was counted, so nothing estimated
    cut_off = saved_answer(scope_a, assistant_a, answered_by="generative", usage_estimated=True, input_tokens=900,
                           output_tokens=12)
    assert message_payload(cut_off)["usage"]["estimated"] is True
    reported = saved_answer(scope_a, assistant_a, answered_by="generative", input_tokens=900, output_tokens=12)
    assert message_payload(reported)["usage"]["estimated"] is False


# ------------------------------------------------------------------ answer mode in the assistant form

def test_answer_mode_is_editable_in_the_assistant_form(client_a, tenant_a, scope_a, assistant_a):
    base = {"name": "Quoter", "temperature": "0.3", "top_p": "0.85", "max_tokens": "300", "presence_penalty": "0",
            "frequency_penalty": "0", "context_window": "8192", "system_prompt": "ROLE x"}
    form = client_a.get(f"/chat/assistants/{assistant_a.pk}/edit").content.decode()
    assert 'name="answer_mode"' in form
    for value in ("extractive", "generative", "generative_fallback"):
        assert f'value="{value}"' in form
    assert client_a.post(f"/chat/assistants/{assistant_a.pk}/edit",
                         {**base, "answer_mode": "extractive"}).status_code == 302
    assistant_a.refresh_from_db()
    assert assistant_a.answer_mode == AnswerMode.EXTRACTIVE
    # A post without the field keeps the mode; a bad value is an error on the field.
    assert client_a.post(f"/chat/assistants/{assistant_a.pk}/edit", base).status_code == 302
    assistant_a.refresh_from_db()
    assert assistant_a.answer_mode == AnswerMode.EXTRACTIVE
    bad = client_a.post(f"/chat/assistants/{assistant_a.pk}/edit", {**base, "answer_mode": "poetry"})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()
    listing = client_a.get("/chat/assistants/").content.decode()
    assert "Extractive: quoted passages, no model" in listing
    # The chat header says no model answers for a quoting assistant.
    page = client_a.get(f"/chat/?assistant={assistant_a.pk}").content.decode()
    assert "Answers quote the documents (no model)" in page


def test_member_cannot_edit_answer_mode(tenant_a, assistant_a):
    before = assistant_a.answer_mode
    wanted = AnswerMode.GENERATIVE if before != AnswerMode.GENERATIVE else AnswerMode.EXTRACTIVE
    member = web_client(tenant_a.member, tenant_a.tenant)
    response = member.post(f"/chat/assistants/{assistant_a.pk}/edit", {"answer_mode": wanted})
    assert response.status_code == 403
    with tenant_scope(tenant_a.tenant):
        assistant_a.refresh_from_db()
    assert assistant_a.answer_mode == before

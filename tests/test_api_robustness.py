"""Caller mistakes never produce a 500: every API route gets malformed bodies from a valid key."""

import datetime

import pytest

from accounts.tenancy import tenant_scope
from tests.crosstenant import BUILDERS
from tests.test_cross_tenant import _fill, object_routes

BAD_BODIES = [
    ("not json at all", "application/json"),
    ("[1, 2, 3]", "application/json"),
    ('{"k": "many", "query": 5, "name": [], "messages": "hi", "scopes": {}, "stream": "yes"}', "application/json"),
    ("\xff\xfe garbage", "text/plain"),
]


def api_routes():
    from django.urls import get_resolver

    from tests.test_cross_tenant import _walk

    return sorted({route for route, _p in _walk(get_resolver()) if route.startswith("api/v1/")})


@pytest.mark.django_db
@pytest.mark.parametrize("route", api_routes())
def test_malformed_requests_get_a_4xx(route, tenant_a, api_a):
    patterns = dict(object_routes())
    values = {}
    if route in patterns:
        with tenant_scope(tenant_a.tenant):
            values = {p: BUILDERS[p](tenant_a) for p in patterns[route].pattern.converters if p in BUILDERS}
    url = _fill(route, values)
    for method in ("post", "put", "patch"):
        for body, content_type in BAD_BODIES:
            response = getattr(api_a, method)(url, data=body, content_type=content_type)
            assert response.status_code < 500, f"{method.upper()} {url} {body!r} -> {response.status_code}"
    response = api_a.get(url + "?limit=-5&offset=abc&period=never&group_by=../../etc")
    assert response.status_code < 500, f"GET {url} with odd query -> {response.status_code}"


# ------------------------------------------------------------------ findings of the schemathesis run (issue 12)

HUGE = "99999999999999999999999"  # beyond PostgreSQL's bigint: LIMIT/OFFSET used to raise DataError


def paginated_routes():
    return [r for r in api_routes() if "<" not in r and r.split("/")[-1] in (
        "api-keys", "assistants", "conversations", "knowledge-bases", "members")]


@pytest.mark.django_db
@pytest.mark.parametrize("route", paginated_routes())
def test_list_limit_and_offset_beyond_bigint(route, api_a):
    response = api_a.get(f"/{route}?limit={HUGE}")
    assert response.status_code == 200, response.content
    assert "limit=" in (response.json()["next"] or "limit=") and len(response.json()["results"]) <= 200
    response = api_a.get(f"/{route}?limit=5&offset={HUGE}")
    assert response.status_code == 200 and response.json()["results"] == []
    for bad in ("limit=-5", "limit=abc", "offset=-1", "offset=x"):
        response = api_a.get(f"/{route}?{bad}")
        assert response.status_code == 400, f"{bad} -> {response.status_code}"
        assert response.json()["error"]["fields"], response.json()


@pytest.mark.django_db
def test_limit_is_clamped_to_the_maximum(api_a, scope_a):
    from tests.factories.chat import ConversationFactory

    ConversationFactory.create_batch(3, tenant=scope_a.tenant)
    body = api_a.get(f"/api/v1/conversations?limit={HUGE}").json()
    assert body["count"] == 3 and len(body["results"]) == 3
    body = api_a.get("/api/v1/conversations?limit=2&offset=1").json()
    assert len(body["results"]) == 2 and body["previous"] and body["next"] is None


@pytest.mark.django_db
def test_nul_in_conversation_search_finds_nothing(api_a, scope_a):
    from tests.factories.chat import ConversationFactory

    ConversationFactory(tenant=scope_a.tenant, title="ab")
    response = api_a.get("/api/v1/conversations?q=a%00b")
    assert response.status_code == 200 and response.json()["results"] == []  # stored text never holds a NUL
    assert api_a.get("/api/v1/conversations?q=ab").json()["count"] == 1


NUL_BODIES = [
    ("/api/v1/knowledge-bases", {"name": "kb", "retrieval": {"k\u0000": 3}}),
    ("/api/v1/knowledge-bases", {"name": "kb", "retrieval": {"k": "a\u0000"}}),
    ("/api/v1/assistants", {"name": "nul", "json_schema": {"type": "object", "properties": {"a\u0000": {}}}}),
    ("/api/v1/openai/chat/completions", {"model": "x", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi\u0000"}]}]}),
    ("/api/v1/openai/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "hi",
                                                                      "\u0000": 1}]}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "body"), NUL_BODIES)
def test_nul_anywhere_in_json_is_a_400(url, body, api_a):
    response = api_a.post(url, data=body, format="json")
    assert response.status_code == 400, response.content
    assert "NUL" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_escaped_backslash_u0000_is_ordinary_text(api_a):
    # The JSON text \\u0000 is a backslash followed by "u0000", not a NUL: it is accepted.
    response = api_a.post("/api/v1/knowledge-bases", data='{"name": "kb \\\\u0000", "retrieval": {}}',
                          content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "kb \\u0000"


@pytest.mark.django_db
def test_nul_in_a_form_field_is_a_400(api_a, scope_a):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.factories.knowledge import make_kb

    kb = make_kb(scope_a.tenant)
    upload = SimpleUploadedFile("notes.txt", b"plain text with \x00 inside is the file's business")
    response = api_a.post(f"/api/v1/knowledge-bases/{kb.pk}/documents", data={"file": upload, "title": "a\x00b"},
                          format="multipart")
    assert response.status_code == 400, response.content
    assert "NUL" in response.json()["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("position", [
    {"after": "garbage"}, {"after": "1-2-3"}, {"after": "-1"}, {"after": "99999999999999999999999-0"},
    {"HTTP_LAST_EVENT_ID": "garbage"},
])
def test_stream_position_is_checked_before_streaming(position, api_a, scope_a):
    from tests.factories.chat import AnswerFactory

    answer = AnswerFactory(tenant=scope_a.tenant)
    query = {k: v for k, v in position.items() if not k.startswith("HTTP_")}
    headers = {k: v for k, v in position.items() if k.startswith("HTTP_")}
    response = api_a.get(f"/api/v1/messages/{answer.pk}/stream", query, **headers)
    assert response.status_code == 400, response
    assert response.json()["error"]["fields"]


@pytest.mark.django_db
@pytest.mark.parametrize("after", ["0", "1700000000000-0", "1700000000000"])
def test_valid_stream_positions_still_stream(after, api_a, scope_a):
    from tests.factories.chat import AnswerFactory

    answer = AnswerFactory(tenant=scope_a.tenant)  # finished long ago: the end is rebuilt from the database
    response = api_a.get(f"/api/v1/messages/{answer.pk}/stream", {"after": after})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")


# ------------------------------------------------------------------ responses keep to the served schema

@pytest.fixture
def openapi(api_a):
    import schemathesis

    return schemathesis.openapi.from_dict(api_a.get("/api/schema/", {"format": "json"}).json())


def conforms(openapi, response, method: str, template: str, **values) -> None:
    """Fail unless the Django test response is one the served schema documents for that operation."""
    import httpx

    url = "http://testserver" + template.format(**values)
    wrapped = httpx.Response(response.status_code, headers=dict(response.items()), content=response.content,
                             request=httpx.Request(method, url))
    wrapped.elapsed = datetime.timedelta(0)  # set by a real transport; schemathesis reads it
    openapi[template][method].validate_response(wrapped)


@pytest.mark.django_db
def test_knowledge_base_responses_match_the_schema(openapi, api_a):
    created = api_a.post("/api/v1/knowledge-bases", {"name": "Handbook"}, format="json")
    assert created.status_code == 201 and created.json()["document_count"] == 0
    conforms(openapi, created, "POST", "/api/v1/knowledge-bases")
    kb_id = created.json()["id"]
    conforms(openapi, api_a.get(f"/api/v1/knowledge-bases/{kb_id}"), "GET", "/api/v1/knowledge-bases/{kb_id}",
             kb_id=kb_id)
    changed = api_a.patch(f"/api/v1/knowledge-bases/{kb_id}", {"description": "x"}, format="json")
    conforms(openapi, changed, "PATCH", "/api/v1/knowledge-bases/{kb_id}", kb_id=kb_id)
    conforms(openapi, api_a.get("/api/v1/knowledge-bases"), "GET", "/api/v1/knowledge-bases")


@pytest.mark.django_db
def test_empty_feedback_matches_the_schema(openapi, api_a, scope_a):
    from tests.factories.chat import AnswerFactory

    answer = AnswerFactory(tenant=scope_a.tenant)
    response = api_a.get(f"/api/v1/messages/{answer.pk}/feedback")
    assert response.json()["rating"] is None
    conforms(openapi, response, "GET", "/api/v1/messages/{message_id}/feedback", message_id=answer.pk)


@pytest.mark.django_db
def test_regenerate_response_does_not_promise_the_question(api_a):
    schema = api_a.get("/api/schema/", {"format": "json"}).json()
    body = schema["paths"]["/api/v1/messages/{message_id}/regenerate"]["post"]["responses"]["201"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "question" not in schema["components"]["schemas"][ref].get("required", [])
    assert "answer" in schema["components"]["schemas"][ref]["required"]


@pytest.mark.django_db
def test_schema_declares_the_api_key_as_bearer_auth(api_a):
    schema = api_a.get("/api/schema/", {"format": "json"}).json()
    schemes = schema["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"]
    assert bearer
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {bearer[0]: []} in operation["security"], f"{method.upper()} {path}"


@pytest.mark.django_db
def test_every_operation_documents_its_errors(api_a, openapi):
    schema = api_a.get("/api/schema/", {"format": "json"}).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status in ("400", "401", "403", "404"):
                documented = operation["responses"].get(status)
                assert documented, f"{method.upper()} {path} does not document {status}"
                assert documented["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    # and the real error bodies are what the schema says
    from rest_framework.test import APIClient

    conforms(openapi, APIClient().get("/api/v1/knowledge-bases"), "GET", "/api/v1/knowledge-bases")
    conforms(openapi, api_a.get("/api/v1/knowledge-bases/0"), "GET", "/api/v1/knowledge-bases/{kb_id}", kb_id=0)
    bad = api_a.post("/api/v1/knowledge-bases", {"name": ""}, format="json")
    assert bad.status_code == 400
    conforms(openapi, bad, "POST", "/api/v1/knowledge-bases")


# ------------------------------------------------------------------ a chunked upload over the limit

@pytest.mark.django_db(transaction=True)
def test_chunked_upload_over_the_limit_is_a_413(tenant_a, settings):
    import httpx

    from knowledge.models import Document
    from tests.chat.live import asgi_server, backend_pids, close_new_connections
    from tests.factories.knowledge import make_kb

    settings.INGEST_MAX_UPLOAD_MB = 1
    with tenant_scope(tenant_a.tenant):
        kb = make_kb(tenant_a.tenant)
    boundary = "fuzzboundary"

    def body():  # a generator: httpx sends it with Transfer-Encoding: chunked and no Content-Length
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
               "Content-Type: text/plain\r\n\r\n").encode()
        for _ in range(8):
            yield b"word " * 52_429  # 8 x 256 KiB: twice the limit
        yield f"\r\n--{boundary}--\r\n".encode()

    before = backend_pids()
    try:
        with asgi_server() as url:
            response = httpx.post(f"{url}/api/v1/knowledge-bases/{kb.pk}/documents", content=body(), timeout=30,
                                  headers={"Authorization": f"Bearer {tenant_a.api_key}",
                                           "Content-Type": f"multipart/form-data; boundary={boundary}"})
    finally:
        close_new_connections(before)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"
    with tenant_scope(tenant_a.tenant):
        assert not Document.objects.filter(kb=kb).exists()


@pytest.mark.django_db
def test_djangos_own_refusals_are_json_errors(api_a, settings):
    many = "&".join(f"f{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = api_a.post("/api/v1/search", data=many, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "parse_error"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_a.post("/api/v1/knowledge-bases", data={"name": "x" * 2000}, format="json")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


@pytest.mark.django_db
def test_provider_models_must_be_a_list_of_names(api_a):
    # Refused by the serializer, before the service would look the (made-up) host name up.
    response = api_a.post("/api/v1/llm/providers", {"name": "p", "base_url": "https://models.invalid/v1",
                                                    "models": True}, format="json")
    assert response.status_code == 400 and "models" in response.json()["error"]["fields"]

"""The ASGI guard answers 413 from the Content-Length header alone, before the body is read, on the upload
routes it knows by URL name."""

import asyncio
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLResolver, get_resolver, path, resolve, reverse

from knowledge import api, views
from knowledge.uploads import UPLOAD_ROUTES, UploadLimitMiddleware

# A URLconf whose upload route was renamed (test_a_renamed_upload_route_fails_at_start_up uses it).
urlpatterns = [path("api/v1/knowledge-bases/<int:kb_id>/files", api.KnowledgeBaseDocuments.as_view(),
                    name="api-kb-files")]


def _run(scope, body_chunks, settings):
    settings.INGEST_MAX_UPLOAD_MB = 1
    seen = {"called": False, "received": []}

    async def app(scope, receive, send):
        seen["called"] = True
        while True:
            message = await receive()
            seen["received"].append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    queue = [{"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
             for i, c in enumerate(body_chunks)]
    reads = {"n": 0}

    async def receive():
        reads["n"] += 1
        return queue.pop(0)

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(UploadLimitMiddleware(app)(scope, receive, send))
    return seen, sent, reads["n"]


def _scope(path, length=None, method="POST"):
    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": method, "path": path, "headers": headers}


def test_announced_oversize_upload_refused_without_reading(settings):
    seen, sent, reads = _run(_scope("/api/v1/knowledge-bases/7/documents", 50 * 1024 * 1024), [b"x"], settings)
    assert not seen["called"] and reads == 0
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "too_large"
    seen, sent, _ = _run(_scope("/knowledge/7/upload/", 50 * 1024 * 1024), [b"x"], settings)
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"])["ok"] is False


def test_small_upload_and_other_paths_pass_through(settings):
    seen, sent, _ = _run(_scope("/knowledge/7/upload/", 10), [b"0123456789"], settings)
    assert seen["called"] and sent[0]["status"] == 200
    seen, sent, _ = _run(_scope("/chat/", 50 * 1024 * 1024), [b"x"], settings)
    assert seen["called"]


def test_chunked_body_cut_off_at_the_limit(settings):
    chunk = b"z" * (512 * 1024)
    seen, _sent, _ = _run(_scope("/knowledge/7/upload/"), [chunk] * 6, settings)
    assert seen["received"][-1] == "http.disconnect"


def named_routes(patterns=None, namespace=""):
    """(full URL name, view) of every named route of the URLconf."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from named_routes(pattern.url_patterns,
                                    f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace)
        elif pattern.name:
            yield f"{namespace}{pattern.name}", pattern.callback


def test_the_guard_covers_exactly_the_routes_of_the_upload_views():
    """Every route to a view that takes files is in UPLOAD_ROUTES, and each of them is matched."""
    upload_routes = {name for name, view in named_routes()
                     if view is views.kb_upload or getattr(view, "view_class", None) is api.KnowledgeBaseDocuments}
    assert upload_routes == UPLOAD_ROUTES
    is_upload = UploadLimitMiddleware(lambda *args: None).is_upload
    for name in UPLOAD_ROUTES:
        url = reverse(name, kwargs={"kb_id": 7})
        assert resolve(url).view_name == name
        assert is_upload({"type": "http", "method": "POST", "path": url})
        assert is_upload({"type": "http", "method": "POST", "path": "/prefix" + url, "root_path": "/prefix"})
        assert not is_upload({"type": "http", "method": "GET", "path": url})
    for other in ("/knowledge/7/upload/extra", "/knowledge/x/upload/", "/api/v1/knowledge-bases/7/reindex",
                  "/api/v1/assistants/7/chat"):
        assert not is_upload({"type": "http", "method": "POST", "path": other})


def test_a_renamed_upload_route_fails_at_start_up(settings):
    settings.ROOT_URLCONF = __name__
    with pytest.raises(ImproperlyConfigured, match="api-kb-documents"):
        UploadLimitMiddleware(lambda *args: None)

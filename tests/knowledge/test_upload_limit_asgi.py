"""The ASGI guard answers 413 from the Content-Length header alone, before the body is read."""

import asyncio
import json

from knowledge.uploads import UploadLimitMiddleware


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

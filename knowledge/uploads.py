"""The upload size limit, enforced before a large body is read.

Three layers, because each server stack reads bodies differently:
  * browsers check `file.size` before sending (templates/knowledge/kb_detail.html);
  * views refuse a Content-Length over the limit before touching request.POST/FILES, and
    `SizeLimitUploadHandler` stops reading a body that grows past the limit without announcing its length;
  * under ASGI Django buffers the whole body before any view runs, so `UploadLimitMiddleware` wraps the
    ASGI application (config/asgi.py) and answers 413 for an announced oversize body without reading it, and
    cuts off a chunked body at the limit.
"""

from __future__ import annotations

import json
import re

from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.urls import URLResolver, get_resolver

from knowledge.services import max_upload_bytes, too_large_message

MULTIPART_SLACK = 64 * 1024  # boundaries, headers and small form fields around the file
# The routes that take uploads, by URL name: the guard follows them wherever urls.py puts them.
UPLOAD_ROUTES = frozenset({"knowledge:kb-upload", "api-kb-documents"})


def declared_too_large(request) -> bool:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > max_upload_bytes() + MULTIPART_SLACK


class SizeLimitUploadHandler(FileUploadHandler):
    """Stops the multipart parser once one file exceeds the limit; the view then answers 413."""

    def __init__(self, request=None):
        super().__init__(request)
        self.limit = max_upload_bytes()
        self.received = 0
        self.exceeded = False

    def new_file(self, *args, **kwargs):
        self.received = 0
        return super().new_file(*args, **kwargs)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size):
        return None


def install_limit(request) -> SizeLimitUploadHandler:
    """Put the limit in front of the upload handlers. When something already read the body (a CSRF check of
    a session-authenticated API call), the file's size is still checked afterwards by document_create."""
    handler = SizeLimitUploadHandler(request)
    if not hasattr(request, "_files"):
        request.upload_handlers.insert(0, handler)
    return handler


def route_paths(patterns, *, namespace: str = "", prefix: str = "/"):
    """(full URL name, regex of its whole path) of every named route under `patterns`, joined as Django's
    resolver joins them."""
    for pattern in patterns:
        regex = prefix + pattern.pattern.regex.pattern.removeprefix("^")
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from route_paths(pattern.url_patterns, namespace=inner, prefix=regex)
        elif pattern.name:
            yield f"{namespace}{pattern.name}", regex


def upload_paths() -> list[re.Pattern]:
    """The paths of UPLOAD_ROUTES, worked out once from the URLconf. A renamed or removed upload route is an
    error here, at start-up, rather than an upload route without the size limit."""
    found = [(name, regex) for name, regex in route_paths(get_resolver().url_patterns) if name in UPLOAD_ROUTES]
    missing = UPLOAD_ROUTES - {name for name, _regex in found}
    if missing:
        raise ImproperlyConfigured(f"knowledge.uploads.UPLOAD_ROUTES names no route: {', '.join(sorted(missing))}")
    return [re.compile(regex) for _name, regex in found]


def path_info(scope) -> str:
    """The path below the application's root path, as Django resolves it."""
    return scope.get("path", "").removeprefix(scope.get("root_path", ""))


class UploadLimitMiddleware:
    """ASGI middleware: refuse oversize uploads on the upload routes before the body is read."""

    def __init__(self, app):
        self.app = app
        self.upload_paths = upload_paths()

    def is_upload(self, scope) -> bool:
        """A POST to one of UPLOAD_ROUTES."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return False
        path = path_info(scope)
        return any(regex.match(path) for regex in self.upload_paths)

    async def __call__(self, scope, receive, send):
        if not self.is_upload(scope):
            return await self.app(scope, receive, send)
        limit = max_upload_bytes() + MULTIPART_SLACK
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > limit:
            return await self._refuse(scope, send)
        received = 0
        cut_off = started = False

        async def limited_receive():
            nonlocal received, cut_off
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut_off = True
                    return {"type": "http.disconnect"}  # Django aborts the request; nothing is stored
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracked_send)
        if cut_off and not started:
            # Django returns without answering an aborted request; the client is still there, so it gets the
            # same 413 as an announced oversize body (the server would otherwise answer 500).
            await self._refuse(scope, send)

    async def _refuse(self, scope, send):
        message = str(too_large_message())
        if path_info(scope).startswith("/api/"):
            body = {"error": {"code": "too_large", "message": message}, "request_id": "-"}
        else:
            body = {"ok": False, "code": "too_large", "message": message}
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": payload})

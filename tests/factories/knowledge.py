"""Knowledge bases and documents, made through the services (documents need a stored file and a sha256)."""

import itertools

from django.core.files.base import ContentFile

from knowledge import services

_names = itertools.count(1)


def make_kb(tenant, *, name=None, **kwargs):
    kwargs.setdefault("allow_any_model", True)
    return services.kb_create(tenant=tenant, name=name or f"KB {next(_names)}", **kwargs)


def make_document(tenant, kb, *, name="notes.txt", data=None, enqueue=False, **kwargs):
    """A stored, queued document. enqueue=False (default) keeps it out of the dispatcher's hands."""
    if data is None:
        data = f"Document {next(_names)}: 검색 증강 생성 테스트 문서입니다. Retrieval test text.".encode()
    if isinstance(data, str):
        data = data.encode()
    document, _created = services.document_create(
        tenant=tenant, kb=kb, upload=ContentFile(data, name=name), filename=name, enqueue=enqueue, **kwargs
    )
    return document

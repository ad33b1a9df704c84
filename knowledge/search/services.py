"""Index maintenance for retrieval (retrieval issue). Ingestion calls these hooks:

    postings_index_document(*, tenant, document)  after every chunk of a document version is stored
                                                   (replaces that document's postings; idempotent)
    postings_delete_document(*, tenant, document_id)  before a document's chunks are deleted or replaced
"""


def postings_index_document(*, tenant, document) -> None:
    return None


def postings_delete_document(*, tenant, document_id: int) -> None:
    return None

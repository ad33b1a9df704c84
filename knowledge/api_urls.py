from django.urls import path

from knowledge import api

urlpatterns = [
    path("knowledge-bases", api.KnowledgeBaseListCreate.as_view(), name="api-kb-list"),
    path("knowledge-bases/<int:kb_id>", api.KnowledgeBaseDetail.as_view(), name="api-kb-detail"),
    path("knowledge-bases/<int:kb_id>/reindex", api.KnowledgeBaseReindex.as_view(), name="api-kb-reindex"),
    path("knowledge-bases/<int:kb_id>/documents", api.KnowledgeBaseDocuments.as_view(), name="api-kb-documents"),
    path("documents/<int:document_id>", api.DocumentDetail.as_view(), name="api-document-detail"),
    path("documents/<int:document_id>/retry", api.DocumentRetry.as_view(), name="api-document-retry"),
    path("documents/<int:document_id>/reindex", api.DocumentReindex.as_view(), name="api-document-reindex"),
    path("documents/<int:document_id>/chunks", api.DocumentChunks.as_view(), name="api-document-chunks"),
]

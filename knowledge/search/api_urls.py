from django.urls import path

from knowledge.search import api

urlpatterns = [
    path("knowledge-bases/<int:kb_id>/search", api.KnowledgeBaseSearch.as_view(), name="api-kb-search"),
    path("search", api.MultiSearch.as_view(), name="api-search"),
]

"""Search API: POST /api/v1/knowledge-bases/{kb_id}/search and POST /api/v1/search (several KBs).

Both need the "read" scope. Unknown or other tenants' KBs are 404 (checked before the body, so a KB id never
leaks through a validation message); a bad body is 400 in the API's one error shape.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import tenant_object_or_404
from knowledge.models import KnowledgeBase
from knowledge.search.config import SettingsError, clean_settings
from knowledge.search.selectors import MAX_QUERY_CHARS, SearchError, search

MAX_K = 50
MAX_KBS = 20
# Per-call options a client may set; model names stay with the KB's admins (they load code or cost money).
API_OPTIONS = {"mode", "fusion", "bm25_weight", "dense_weight", "rrf_k", "candidates", "mmr_lambda",
               "dedupe_threshold", "neighbors", "expansion", "compression", "k1", "b"}


class SearchFiltersSerializer(serializers.Serializer):
    document_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False,
                                         max_length=1000)


class SearchRequestSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS, trim_whitespace=True)
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=8)
    filters = SearchFiltersSerializer(required=False)
    options = serializers.DictField(required=False)

    def validate_options(self, value):
        unknown = set(value) - API_OPTIONS
        if unknown:
            raise serializers.ValidationError(f"Unknown or not allowed option(s): {', '.join(sorted(unknown))}.")
        try:
            return clean_settings(value)
        except SettingsError as exc:
            raise serializers.ValidationError(exc.errors) from exc


class MultiSearchRequestSerializer(SearchRequestSerializer):
    kb_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=MAX_KBS)


class SearchHitSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    kb_id = serializers.IntegerField()
    document_title = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading_path = serializers.CharField()
    ordinal = serializers.IntegerField()
    text = serializers.CharField()
    score = serializers.FloatField()
    bm25_score = serializers.FloatField(allow_null=True)
    dense_score = serializers.FloatField(allow_null=True)
    bm25_rank = serializers.IntegerField(allow_null=True)
    dense_rank = serializers.IntegerField(allow_null=True)
    rerank_score = serializers.FloatField(allow_null=True)
    found_by = serializers.ListField(child=serializers.CharField())
    context_text = serializers.CharField()
    compressed_text = serializers.CharField(allow_null=True)


class SearchResponseSerializer(serializers.Serializer):
    query = serializers.CharField()
    queries = serializers.ListField(child=serializers.CharField())
    mode = serializers.CharField()
    hits = SearchHitSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    timings_ms = serializers.DictField(child=serializers.FloatField())


def _run(request, kb_ids: list[int], data: dict) -> Response:
    api_key = getattr(request, "api_key", None)
    usage = {"api_key_id": api_key.pk} if api_key is not None else {}
    if getattr(request.user, "pk", None):
        usage["user_id"] = request.user.pk
    try:
        result = search(tenant=request.tenant, kb_ids=kb_ids, query=data["query"], k=data["k"],
                        filters=data.get("filters") or None, options={**data.get("options", {}), "usage": usage})
    except SearchError as exc:
        raise exceptions.ValidationError(exc.fields or {"query": [exc.message]}) from exc
    return Response(SearchResponseSerializer(result).data)


class KnowledgeBaseSearch(APIView):
    required_scopes = {"POST": "read"}

    @extend_schema(request=SearchRequestSerializer, responses=SearchResponseSerializer,
                   summary="Hybrid search (BM25 + dense) in one knowledge base")
    def post(self, request, kb_id):
        kb = tenant_object_or_404(KnowledgeBase, tenant=request.tenant, pk=kb_id)
        data = SearchRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _run(request, [kb.pk], data.validated_data)


class MultiSearch(APIView):
    required_scopes = {"POST": "read"}

    @extend_schema(request=MultiSearchRequestSerializer, responses=SearchResponseSerializer,
                   summary="Hybrid search across several knowledge bases")
    def post(self, request):
        data = MultiSearchRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = list(dict.fromkeys(data.validated_data["kb_ids"]))
        found = set(KnowledgeBase.objects.filter(tenant=request.tenant, pk__in=wanted).values_list("pk", flat=True))
        if len(found) != len(wanted):
            raise exceptions.NotFound("Knowledge base not found.")
        return _run(request, wanted, data.validated_data)

"""Search API: POST /api/v1/knowledge-bases/{kb_id}/search and POST /api/v1/search (several KBs).

Both need the "read" scope. Unknown or other tenants' KBs are 404 (checked before the body, so a KB id never
leaks through a validation message); a bad body is 400 in the API's one error shape.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.schema import errors
from accounts.selectors import tenant_object_or_404
from knowledge.models import KnowledgeBase
from knowledge.search.config import SettingsError, clean_settings
from knowledge.search.selectors import MAX_QUERY_CHARS, search, search_payer

MAX_K = 50
MAX_KBS = 20
# Per-call options a client may set; model names stay with the KB's admins (they load code or cost money).
API_OPTIONS = {"mode", "fusion", "bm25_weight", "dense_weight", "rrf_k", "candidates", "mmr_lambda",
               "dedupe_threshold", "neighbors", "expansion", "compression", "k1", "b"}


class SearchOptionsField(serializers.DictField):
    """Retrieval settings a client may set for one call, checked as the KB's settings are."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        unknown = set(value) - API_OPTIONS
        if unknown:
            raise serializers.ValidationError(f"Unknown or not allowed option(s): {', '.join(sorted(unknown))}.")
        try:
            return clean_settings(value)
        except SettingsError as exc:  # a field of this serializer: its errors go under "options"
            raise serializers.ValidationError(exc.fields) from exc


class SearchFiltersSerializer(serializers.Serializer):
    document_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False,
                                         max_length=1000)


class SearchRequestSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS, trim_whitespace=True)
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=8)
    filters = SearchFiltersSerializer(required=False)
    options = SearchOptionsField(required=False)


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
    bm25_part = serializers.FloatField(help_text="What the keyword side added to the fused score.")
    dense_part = serializers.FloatField(help_text="What the vector side added to the fused score.")
    found_by = serializers.ListField(child=serializers.CharField())
    context_text = serializers.CharField()
    compressed_text = serializers.CharField(allow_null=True)


class SearchWeightsSerializer(serializers.Serializer):
    kb_language = serializers.CharField(help_text='Language of the passages: "ko", "en", or "" for a mix.')
    lexical_coverage = serializers.FloatField(help_text="Share of the question's keyword weight the KBs contain.")
    lexical_trust = serializers.FloatField(help_text="0-1: how far the keyword ranking was trusted.")
    bm25 = serializers.FloatField(help_text="Weight of the keyword (BM25) side.")
    dense = serializers.FloatField(help_text="Weight of the vector side.")


class SearchResponseSerializer(serializers.Serializer):
    query = serializers.CharField()
    queries = serializers.ListField(child=serializers.CharField())
    mode = serializers.CharField()
    query_language = serializers.CharField(help_text='"ko", "en", or "" when the query has no letters.')
    weights = SearchWeightsSerializer(allow_null=True, help_text="How the hybrid fusion weighed the sides for the "
                                      "question (null in bm25 or dense mode).")
    hits = SearchHitSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    timings_ms = serializers.DictField(child=serializers.FloatField())


def _run(request, kb_ids: list[int], data: dict) -> Response:
    api_key = getattr(request, "api_key", None)
    payer = search_payer(user_id=getattr(request.user, "pk", None), api_key_id=api_key.pk if api_key else None)
    result = search(tenant=request.tenant, kb_ids=kb_ids, query=data["query"], k=data["k"],
                    filters=data.get("filters") or None, options=data.get("options"), usage=payer)
    return Response(SearchResponseSerializer(result).data)


class KnowledgeBaseSearch(APIView):
    required_scopes = {"POST": "read"}

    @extend_schema(request=SearchRequestSerializer, responses=SearchResponseSerializer,
                   summary="Hybrid search (BM25 + dense) in one knowledge base",
                   extensions=errors(429, 502, 503))
    def post(self, request, kb_id):
        kb = tenant_object_or_404(KnowledgeBase, tenant=request.tenant, pk=kb_id)
        data = SearchRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return _run(request, [kb.pk], data.validated_data)


class MultiSearch(APIView):
    required_scopes = {"POST": "read"}

    @extend_schema(request=MultiSearchRequestSerializer, responses=SearchResponseSerializer,
                   summary="Hybrid search across several knowledge bases",
                   extensions=errors(429, 502, 503))
    def post(self, request):
        data = MultiSearchRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = list(dict.fromkeys(data.validated_data["kb_ids"]))
        found = set(KnowledgeBase.objects.filter(tenant=request.tenant, pk__in=wanted).values_list("pk", flat=True))
        if len(found) != len(wanted):
            raise exceptions.NotFound("Knowledge base not found.")
        return _run(request, wanted, data.validated_data)

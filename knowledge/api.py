"""REST API for knowledge bases and documents (/api/v1/...). Reads need the "read" scope, writes "write"."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.schema import errors
from config.parsers import FormParser, JSONParser, MultiPartParser
from knowledge import selectors, services
from knowledge.models import Document
from knowledge.serializers import (
    ChunkSerializer,
    DocumentSerializer,
    DocumentUploadResultSerializer,
    DocumentUploadSerializer,
    KnowledgeBaseSerializer,
    KnowledgeBaseWriteSerializer,
)
from knowledge.uploads import declared_too_large, install_limit


class KnowledgeBaseListCreate(generics.ListAPIView):
    serializer_class = KnowledgeBaseSerializer

    def get_queryset(self):
        return selectors.kb_list(tenant=self.request.tenant)

    @extend_schema(request=KnowledgeBaseWriteSerializer, responses={201: KnowledgeBaseSerializer},
                   summary="Create a knowledge base")
    def post(self, request):
        data = KnowledgeBaseWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kb = services.kb_create(tenant=request.tenant, created_by=getattr(request.user, "pk", None) and request.user,
                                **data.validated_data)
        return Response(KnowledgeBaseSerializer(kb).data, status=status.HTTP_201_CREATED)


class KnowledgeBaseDetail(APIView):
    @extend_schema(responses=KnowledgeBaseSerializer, summary="A knowledge base")
    def get(self, request, kb_id):
        kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        return Response(KnowledgeBaseSerializer(kb).data)

    @extend_schema(request=KnowledgeBaseWriteSerializer, responses=KnowledgeBaseSerializer,
                   summary="Change settings (new chunking re-indexes every document; a new embedding model "
                           "re-embeds the chunks in the background)")
    def patch(self, request, kb_id):
        kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        data = KnowledgeBaseWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        kb = services.kb_update(tenant=request.tenant, kb=kb, **data.validated_data)
        return Response(KnowledgeBaseSerializer(kb).data)

    @extend_schema(responses={204: None}, summary="Delete a knowledge base with all its documents and chunks")
    def delete(self, request, kb_id):
        kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        services.kb_delete(tenant=request.tenant, kb=kb)
        return Response(status=status.HTTP_204_NO_CONTENT)


class KnowledgeBaseReindex(APIView):
    @extend_schema(request=None, responses={202: dict}, summary="Re-index every document of a knowledge base")
    def post(self, request, kb_id):
        kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        count = services.kb_reindex(tenant=request.tenant, kb=kb)
        return Response({"queued": count}, status=status.HTTP_202_ACCEPTED)


class KnowledgeBaseDocuments(generics.ListAPIView):
    serializer_class = DocumentSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        kb = selectors.kb_get(tenant=self.request.tenant, kb_id=self.kwargs["kb_id"])
        wanted = self.request.query_params.get("status") or None
        if wanted and wanted not in Document.Status.values:
            raise exceptions.ValidationError({"status": [f"One of: {', '.join(Document.Status.values)}"]})
        return selectors.document_list(tenant=self.request.tenant, kb=kb, status=wanted)

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=Document.Status.values)],
                   summary="Documents of a knowledge base")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={201: DocumentUploadResultSerializer, 200: DocumentUploadResultSerializer},
        summary="Upload one file (multipart field 'file'); 201 queued, 200 when it is a duplicate",
    )
    def post(self, request, kb_id):
        kb = selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        if declared_too_large(request):
            raise services.UploadTooLarge(services.too_large_message())
        limiter = install_limit(request._request)
        upload = request.FILES.get("file")
        if limiter.exceeded:
            raise services.UploadTooLarge(services.too_large_message())
        if upload is None:
            raise exceptions.ValidationError({"file": ["Send the file as multipart/form-data field 'file'."]})
        document, created = services.document_create(
            tenant=request.tenant, kb=kb, upload=upload, title=str(request.data.get("title", "")).strip(),
        )
        body = DocumentSerializer(document).data
        body["duplicate"] = not created
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DocumentDetail(APIView):
    @extend_schema(responses=DocumentSerializer, summary="A document with its processing status and progress")
    def get(self, request, document_id):
        document = selectors.document_get(tenant=request.tenant, document_id=document_id)
        return Response(DocumentSerializer(document).data)

    @extend_schema(responses={204: None}, summary="Delete a document and its chunks")
    def delete(self, request, document_id):
        document = selectors.document_get(tenant=request.tenant, document_id=document_id)
        services.document_delete(tenant=request.tenant, document=document)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentRetry(APIView):
    @extend_schema(request=None, responses={202: DocumentSerializer}, extensions=errors(409),
                   summary="Run a failed document again")
    def post(self, request, document_id):
        document = selectors.document_get(tenant=request.tenant, document_id=document_id)
        document = services.document_retry(tenant=request.tenant, document=document)
        return Response(DocumentSerializer(document).data, status=status.HTTP_202_ACCEPTED)


class DocumentReindex(APIView):
    @extend_schema(request=None, responses={202: DocumentSerializer}, summary="Parse, chunk and embed a document again")
    def post(self, request, document_id):
        document = selectors.document_get(tenant=request.tenant, document_id=document_id)
        document = services.document_reindex(tenant=request.tenant, document=document)
        return Response(DocumentSerializer(document).data, status=status.HTTP_202_ACCEPTED)


class DocumentChunks(generics.ListAPIView):
    serializer_class = ChunkSerializer

    @extend_schema(summary="The chunks of a document, in order")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        document = selectors.document_get(tenant=self.request.tenant, document_id=self.kwargs["document_id"])
        return selectors.chunk_list(tenant=self.request.tenant, document=document)

"""Evaluation API: a KB's test questions and evaluation runs (/api/v1/...).

    GET  knowledge-bases/{kb_id}/eval-questions          list (read)
    POST knowledge-bases/{kb_id}/eval-questions          add one (write)
    POST knowledge-bases/{kb_id}/eval-questions/upload   import a JSONL or CSV file (write)
    GET/DELETE eval-questions/{eval_question_id}         one question (read / write)
    GET  knowledge-bases/{kb_id}/eval-runs               runs, newest first (read)
    POST knowledge-bases/{kb_id}/eval-runs               start a run: 202, a worker scores it (write)
    GET  eval-runs/{eval_run_id}                         one run with its per-question results (read)

Unknown or other tenants' KBs, questions and runs are 404, checked before the body; bad input is 400 in the
API's one error shape; starting a run while one of the KB is queued or running is 409.
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.schema import errors
from config.parsers import FormParser, JSONParser, MultiPartParser
from knowledge import selectors as kb_selectors
from knowledge.search.api import SearchOptionsField
from knowledge.search.evaluation import selectors as eval_selectors
from knowledge.search.evaluation import services as eval_services
from knowledge.search.models import EvalQuestion, EvalRun
from knowledge.services import UploadTooLarge

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_EXPECTED = 100


# ---------------------------------------------------------------- serializers

class ExpectedDocumentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()


class EvalQuestionSerializer(serializers.ModelSerializer):
    kb_id = serializers.IntegerField(read_only=True)
    expected_documents = serializers.SerializerMethodField()

    class Meta:
        model = EvalQuestion
        fields = ["id", "kb_id", "text", "expected_documents", "unresolved_refs", "created_at"]
        read_only_fields = fields

    @extend_schema_field(ExpectedDocumentSerializer(many=True))
    def get_expected_documents(self, question) -> list[dict]:
        return [{"id": d.pk, "title": d.title} for d in question.expected_documents.all()]


class EvalQuestionCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=4000, trim_whitespace=True)
    expected_document_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=MAX_EXPECTED,
        help_text="Ids of documents of this knowledge base a good search must find.")
    expected = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=MAX_EXPECTED,
        help_text="Documents named by file name, title or id (names that match nothing are kept as unresolved).")

    def validate(self, attrs):
        if not attrs.get("expected_document_ids") and not attrs.get("expected"):
            raise serializers.ValidationError(
                {"expected_document_ids": ["Name at least one expected document (expected_document_ids or "
                                           "expected)."]})
        return attrs


class EvalQuestionUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text='JSONL ({"question": "...", "expected": ["file name, title or id"]} per '
                                           'line) or CSV (columns question, expected; several separated by |).')


class EvalQuestionImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    with_unresolved = serializers.IntegerField(help_text="Questions naming documents that were not found.")


class EvalRunStartSerializer(serializers.Serializer):
    k = serializers.IntegerField(min_value=1, max_value=50, default=10, help_text="Recall@k cut-off.")
    options = SearchOptionsField(required=False, help_text="Retrieval settings to override for this run "
                                                           "(mode, fusion, weights...).")


class EvalRunProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField()


class EvalRunSerializer(serializers.ModelSerializer):
    kb_id = serializers.IntegerField(read_only=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = EvalRun
        fields = ["id", "kb_id", "status", "k", "question_count", "progress", "ndcg_at_10", "recall_at_k", "mrr",
                  "settings", "error", "created_at", "started_at", "finished_at", "duration_ms"]
        read_only_fields = fields

    @extend_schema_field(EvalRunProgressSerializer)
    def get_progress(self, run) -> dict:
        return {"done": run.progress, "total": run.question_count, "percent": run.progress_percent}


class EvalRunDetailSerializer(EvalRunSerializer):
    per_question = serializers.ListField(
        child=serializers.DictField(), read_only=True,
        help_text='Per question: {"question_id", "question", "found" (document ids, best first), "expected", '
                  '"ndcg", "recall", "rr"}.')

    class Meta(EvalRunSerializer.Meta):
        fields = [*EvalRunSerializer.Meta.fields, "per_question"]
        read_only_fields = fields


# ---------------------------------------------------------------- views

class KnowledgeBaseEvalQuestions(generics.ListAPIView):
    serializer_class = EvalQuestionSerializer

    def get_queryset(self):
        kb = kb_selectors.kb_get(tenant=self.request.tenant, kb_id=self.kwargs["kb_id"])
        return eval_selectors.eval_question_list(tenant=self.request.tenant, kb=kb).order_by("created_at", "id")

    @extend_schema(summary="Test questions of a knowledge base")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=EvalQuestionCreateSerializer, responses={201: EvalQuestionSerializer},
                   summary="Add a test question with the documents a good search must find")
    def post(self, request, kb_id):
        kb = kb_selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        data = EvalQuestionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        question = eval_services.eval_question_create(
            tenant=request.tenant, kb=kb, text=data.validated_data["text"],
            document_ids=data.validated_data.get("expected_document_ids"),
            refs=data.validated_data.get("expected"))
        question = eval_selectors.eval_question_list(tenant=request.tenant, kb=kb).get(pk=question.pk)
        return Response(EvalQuestionSerializer(question).data, status=status.HTTP_201_CREATED)


class KnowledgeBaseEvalQuestionsUpload(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": EvalQuestionUploadSerializer},
                   responses={201: EvalQuestionImportResultSerializer},
                   summary="Import test questions from a JSONL or CSV file (all or none)")
    def post(self, request, kb_id):
        kb = kb_selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        upload = request.FILES.get("file")
        if upload is None:
            raise exceptions.ValidationError({"file": ["Send the file as multipart/form-data field 'file'."]})
        if upload.size > MAX_UPLOAD_BYTES:
            raise UploadTooLarge(_("The file is larger than 5 MB."))
        outcome = eval_services.eval_questions_import(tenant=request.tenant, kb=kb, data=upload.read(),
                                                   filename=upload.name or "")
        return Response(EvalQuestionImportResultSerializer(outcome).data, status=status.HTTP_201_CREATED)


class EvalQuestionDetail(APIView):
    @extend_schema(responses=EvalQuestionSerializer, summary="A test question")
    def get(self, request, eval_question_id):
        question = eval_selectors.eval_question_get(tenant=request.tenant, question_id=eval_question_id)
        return Response(EvalQuestionSerializer(question).data)

    @extend_schema(responses={204: None}, summary="Delete a test question (runs already made keep their results)")
    def delete(self, request, eval_question_id):
        question = eval_selectors.eval_question_get(tenant=request.tenant, question_id=eval_question_id)
        eval_services.eval_question_delete(tenant=request.tenant, question=question)
        return Response(status=status.HTTP_204_NO_CONTENT)


class KnowledgeBaseEvalRuns(generics.ListAPIView):
    serializer_class = EvalRunSerializer
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_queryset(self):
        kb = kb_selectors.kb_get(tenant=self.request.tenant, kb_id=self.kwargs["kb_id"])
        return eval_selectors.eval_run_list(tenant=self.request.tenant, kb=kb)

    @extend_schema(summary="Evaluation runs of a knowledge base, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=EvalRunStartSerializer, responses={202: EvalRunSerializer}, extensions=errors(409),
                   summary="Start an evaluation run of every test question (a worker scores it; poll the run)")
    def post(self, request, kb_id):
        kb = kb_selectors.kb_get(tenant=request.tenant, kb_id=kb_id)
        data = EvalRunStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = eval_services.eval_run_start(tenant=request.tenant, kb=kb, user=request.user,
                                        k=data.validated_data["k"], options=data.validated_data.get("options"))
        return Response(EvalRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class EvalRunDetail(APIView):
    @extend_schema(responses=EvalRunDetailSerializer, summary="An evaluation run: status, progress, metrics")
    def get(self, request, eval_run_id):
        run = eval_selectors.eval_run_get(tenant=request.tenant, run_id=eval_run_id)
        return Response(EvalRunDetailSerializer(run).data)

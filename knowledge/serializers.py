from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from knowledge.models import Chunk, Document, KnowledgeBase, VectorUpgrade
from knowledge.parsers.base import REPAIRED, UNDECODABLE
from knowledge.selectors import kb_vectors
from knowledge.services import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE


class VectorsSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="The model of the vectors searches use now (= embedding_model).")
    label = serializers.CharField(help_text="Its display name, e.g. \"multilingual USE\".")
    dim = serializers.IntegerField()
    upgrading_to = serializers.CharField(allow_null=True, help_text="The model the vectors are being re-embedded "
                                         "with in the background; searches switch to it once all are done.")
    upgrading_to_label = serializers.CharField(allow_null=True)
    filling = serializers.BooleanField(help_text="New documents' chunks are being embedded in the background "
                                       "(a model too slow for ingestion to wait on); until then keyword search "
                                       "finds them. upgrade_percent: the share of chunks with vectors.")
    upgrade_status = serializers.ChoiceField(choices=VectorUpgrade.Status.choices, allow_null=True,
                                             help_text="The last upgrade's state; null: never upgraded.")
    upgrade_percent = serializers.IntegerField(allow_null=True, help_text="Chunks embedded so far, while upgrading "
                                               "or filling.")
    upgrade_error = serializers.CharField(allow_blank=True, help_text="Why the last upgrade stopped, when it failed.")


class KnowledgeBaseSerializer(serializers.ModelSerializer):
    document_count = serializers.SerializerMethodField()
    vectors = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeBase
        fields = ["id", "name", "description", "language", "embedding_model", "embedding_dim", "chunk_size",
                  "chunk_overlap", "retrieval", "created_at", "updated_at", "document_count", "vectors"]
        read_only_fields = ["id", "embedding_dim", "created_at", "updated_at", "document_count", "vectors"]

    @extend_schema_field(VectorsSerializer)
    def get_vectors(self, kb) -> dict:
        """Which vectors searches use, and the background upgrade to another model, if any."""
        return kb_vectors(tenant=kb.tenant_id, kb=kb)

    def get_document_count(self, kb) -> int:
        """Annotated by the list selector; counted for a single knowledge base (create, get, change)."""
        counted = getattr(kb, "document_count", None)
        return kb.documents.count() if counted is None else counted


class KnowledgeBaseWriteSerializer(serializers.Serializer):
    """Create (name required) or update (any subset). Changing chunking re-indexes; changing embedding_model alone
    re-embeds the chunks in the background (see `vectors`)."""

    name = serializers.CharField(max_length=120)
    description = serializers.CharField(required=False, allow_blank=True)
    language = serializers.ChoiceField(choices=KnowledgeBase.Language.choices, required=False)
    embedding_model = serializers.CharField(max_length=200, required=False,
                                            help_text="One of the models the operator offers (EMBEDDING_MODELS).")
    chunk_size = serializers.IntegerField(min_value=MIN_CHUNK_SIZE, max_value=MAX_CHUNK_SIZE, required=False)
    chunk_overlap = serializers.IntegerField(min_value=0, max_value=MAX_CHUNK_SIZE // 2, required=False)
    retrieval = serializers.DictField(required=False, help_text="Named retrieval settings (an object).")


class ProgressSerializer(serializers.Serializer):
    chunks_embedded = serializers.IntegerField()
    chunks_total = serializers.IntegerField()
    percent = serializers.IntegerField()


class DocumentWarningSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=[UNDECODABLE, REPAIRED],
                                   help_text="undecodable: characters left out; repaired: lines whose mojibake was "
                                             "repaired.")
    count = serializers.IntegerField()
    message = serializers.CharField(help_text="The warning in the request's language.")


class DocumentSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()
    kb_id = serializers.IntegerField(read_only=True)
    retry_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Document
        fields = ["id", "kb_id", "title", "filename", "content_type", "size", "sha256", "status", "error",
                  "warnings", "progress", "page_count", "version", "attempts", "retry_at", "created_at", "updated_at",
                  "started_at", "finished_at"]
        read_only_fields = fields

    @extend_schema_field(DocumentWarningSerializer(many=True))
    def get_warnings(self, document) -> list[dict]:
        """What reading the file took (damaged characters left out, garbled text repaired)."""
        return [{"code": w.get("code"), "count": w.get("count", 0), "message": message}
                for w, message in zip(document.warnings or [], document.warning_messages, strict=True)]

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, document) -> dict:
        return {"chunks_embedded": document.chunks_embedded, "chunks_total": document.chunks_total,
                "percent": document.progress_percent}


class DocumentUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="One file: .txt .md .pdf .csv .docx .html")
    title = serializers.CharField(required=False, allow_blank=True, max_length=300)


class DocumentUploadResultSerializer(DocumentSerializer):
    duplicate = serializers.BooleanField(read_only=True, help_text="True: the same file was already in the KB; "
                                                                   "this is that document, not indexed again.")

    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "duplicate"]
        read_only_fields = fields


class ChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Chunk
        fields = ["id", "ordinal", "text", "page", "heading_path", "char_start", "char_end", "token_count"]
        read_only_fields = fields

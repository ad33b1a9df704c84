from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiKey, TenantModel
from chat import defaults
from knowledge.models import KnowledgeBase


def _range(name: str):
    _default, low, high = defaults.PARAM_RANGES[name]
    return [MinValueValidator(low), MaxValueValidator(high)]


def _param_default(name: str):
    """Generation parameters start from chat.defaults, like the new-assistant form (one source)."""
    return defaults.PARAM_RANGES[name][0]


def _default_prompt() -> str:
    return defaults.DEFAULT_SYSTEM_PROMPT


class AnswerMode(models.TextChoices):
    """How an assistant answers: quoting the documents (no model), a model, or a model with quoting as fallback."""

    EXTRACTIVE = "extractive", _("Extractive: quoted passages, no model")
    GENERATIVE = "generative", _("Generative: written by the model")
    GENERATIVE_FALLBACK = "generative_fallback", _("Generative, extractive when the model is unavailable")


class Assistant(TenantModel):
    """How a tenant's questions are answered: which knowledge, which model, which instructions."""

    name = models.CharField(_("name"), max_length=120)
    description = models.CharField(_("description"), max_length=300, blank=True)
    # Empty means "every knowledge base of the tenant" (so the demo assistant works whatever was seeded first).
    knowledge_bases = models.ManyToManyField(KnowledgeBase, blank=True, related_name="assistants",
                                             verbose_name=_("knowledge bases"))
    answer_mode = models.CharField(_("answer mode"), max_length=20, choices=AnswerMode.choices,
                                   default=AnswerMode.GENERATIVE_FALLBACK)
    answer_target = models.CharField(_("answer model"), max_length=200, blank=True,
                                     help_text=_("Empty: the platform's default answer model."))
    cheap_target = models.CharField(_("helper model"), max_length=200, blank=True,
                                    help_text=_("Used to rewrite follow-up questions. Empty: the platform's default."))
    system_prompt = models.TextField(_("system prompt"), default=_default_prompt)
    few_shot = models.JSONField(_("examples"), default=list, blank=True)  # [{"user": "...", "assistant": "..."}]
    temperature = models.FloatField(_("temperature"), default=_param_default("temperature"),
                                    validators=_range("temperature"))
    top_p = models.FloatField(_("top p"), default=_param_default("top_p"), validators=_range("top_p"))
    top_k = models.PositiveIntegerField(_("top k"), default=_param_default("top_k"), null=True, blank=True,
                                        validators=_range("top_k"))
    max_tokens = models.PositiveIntegerField(_("max tokens"), default=_param_default("max_tokens"),
                                             validators=_range("max_tokens"))
    presence_penalty = models.FloatField(_("presence penalty"), default=_param_default("presence_penalty"),
                                         validators=_range("presence_penalty"))
    frequency_penalty = models.FloatField(_("frequency penalty"), default=_param_default("frequency_penalty"),
                                          validators=_range("frequency_penalty"))
    context_window = models.PositiveIntegerField(
        _("context window"), default=defaults.DEFAULT_CONTEXT_WINDOW,
        validators=[MinValueValidator(1024), MaxValueValidator(2_000_000)],
        help_text=_("Tokens the answer model accepts; documents are packed to fit."))
    # Passed to search as options: {"k": 8, "bm25_weight": 0.45, "dense_weight": 0.55, "min_dense_score": 0.2}
    retrieval = models.JSONField(_("retrieval settings"), default=dict, blank=True)
    json_schema = models.JSONField(_("JSON schema"), null=True, blank=True)
    is_default = models.BooleanField(_("default"), default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="uniq_assistant_name_per_tenant")]

    def __str__(self) -> str:
        return self.name


class Conversation(TenantModel):
    class Source(models.TextChoices):
        WEB = "web", _("Browser")
        API = "api", _("API")
        OPENAI = "openai", _("OpenAI-compatible API")

    assistant = models.ForeignKey(Assistant, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="conversations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    title = models.CharField(_("title"), max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.WEB)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["tenant", "user", "-updated_at"], name="conversation_user_recent")]

    def __str__(self) -> str:
        return self.title or f"#{self.pk}"


class Message(TenantModel):
    class Role(models.TextChoices):
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Answering")
        DONE = "done", _("Done")
        STOPPED = "stopped", _("Stopped")
        FAILED = "failed", _("Failed")

    FINAL = (Status.DONE, Status.STOPPED, Status.FAILED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DONE, db_index=True)
    # An answer points at the question it answers; regenerating adds another answer with a higher version.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="answers")
    version = models.PositiveIntegerField(default=1)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # [{"n": 1, "chunk_id", "document_id", "kb_id", "title", "page", "snippet"}] for the [n] the answer cites.
    citations = models.JSONField(default=list, blank=True)
    # Every chunk the answer was given, numbered [1..n] as in the prompt, in citation format (cited or not).
    sources = models.JSONField(default=list, blank=True)
    context_chunk_ids = models.JSONField(default=list, blank=True)  # what [1..n] referred to, in order
    standalone_question = models.TextField(blank=True)
    warnings = models.JSONField(default=list, blank=True)
    target = models.CharField(max_length=200, blank=True)
    # What wrote this answer: "extractive" (quoted from the documents) or "generative" (a model); "" before.
    answered_by = models.CharField(max_length=20, blank=True)
    provider = models.CharField(max_length=60, blank=True)
    model = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    ignored_params = models.JSONField(default=list, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    # Per-request generation parameters (API callers may override the assistant's, e.g. temperature).
    overrides = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)  # condense_ms, retrieval_ms, ttft_ms, total_ms
    # The generation run that owns this answer (its claim token, config.jobs): a redelivered task takes over and
    # the old one stops writing. The run's process beats while it runs; the job sweep fails a silent one.
    run_id = models.CharField(max_length=32, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"], name="message_conversation_order")]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL


class Feedback(TenantModel):
    """One rating per answer; giving it again replaces it."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    rating = models.SmallIntegerField(choices=[(1, _("Helpful")), (-1, _("Not helpful"))])
    comment = models.TextField(_("comment"), blank=True, max_length=2000)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.rating:+d} on {self.message_id}"

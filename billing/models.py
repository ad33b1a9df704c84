"""Usage ledger, prices, plans and quota counters.

Assistants, conversations, messages and documents live in apps above billing, so the ledger refers to them by
integer id (no foreign keys upward): an append-only ledger must outlive whatever it describes anyway.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Tenant, TenantModel
from billing.types import Stage

MONEY = {"max_digits": 24, "decimal_places": 12}  # USD; exact for any rate with up to 6 decimals per 1M tokens
RATE = {"max_digits": 14, "decimal_places": 6}  # USD per 1M tokens

STAGE_CHOICES = [
    (Stage.EMBEDDING, _("Embedding")),
    (Stage.CONDENSE, _("Condense question")),
    (Stage.EXPANSION, _("Query expansion")),
    (Stage.COMPRESSION, _("Context compression")),
    (Stage.ANSWER, _("Answer")),
    (Stage.RERANK, _("Rerank")),
    (Stage.EXTRACTIVE, _("Extractive answer")),
]
STAGE_LABELS = dict(STAGE_CHOICES)


class Price(models.Model):
    """One version of a model's price. Versions are never edited once in effect: staff add a new version with
    a later `effective_from`, and each ledger record keeps the version it was priced with."""

    provider = models.CharField(_("provider"), max_length=40, help_text=_("openai, gemini, xai, ollama, llamacpp…"))
    model = models.CharField(
        _("model"), max_length=120,
        help_text=_("Model name as the provider reports it; dated variants (gpt-4o-2024-08-06) match their base "
                    "name. '*' prices every model of the provider without a price of its own."),
    )
    effective_from = models.DateTimeField(_("effective from"))
    input_per_mtok = models.DecimalField(_("input / 1M tokens"), **RATE, default=Decimal(0))
    cached_input_per_mtok = models.DecimalField(
        _("cached input / 1M tokens"), **RATE, null=True, blank=True,
        help_text=_("Empty: cached input is billed at the input rate."),
    )
    output_per_mtok = models.DecimalField(_("output / 1M tokens"), **RATE, default=Decimal(0))
    tier_threshold_tokens = models.PositiveIntegerField(
        _("tier threshold (prompt tokens)"), null=True, blank=True,
        help_text=_("Prompts longer than this are billed entirely at the 'above' rates (e.g. 200000)."),
    )
    input_per_mtok_above = models.DecimalField(_("input above threshold"), **RATE, null=True, blank=True)
    cached_input_per_mtok_above = models.DecimalField(_("cached input above threshold"), **RATE, null=True,
                                                      blank=True)
    output_per_mtok_above = models.DecimalField(_("output above threshold"), **RATE, null=True, blank=True)
    per_gpu_hour = models.DecimalField(
        _("per GPU-hour"), max_digits=14, decimal_places=6, null=True, blank=True,
        help_text=_("Self-hosted: the GPU's hourly cost divided by the requests it serves in parallel; each call "
                    "is charged its duration at this rate, on top of any token rates."),
    )
    note = models.CharField(_("note"), max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "model", "effective_from"], name="billing_price_version"),
        ]
        indexes = [models.Index(fields=["model", "effective_from"], name="billing_price_lookup")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} from {self.effective_from:%Y-%m-%d}"

    def save(self, *args, **kwargs):
        # Lookups match lower-cased names (billing.pricing.model_candidates).
        self.provider, self.model = self.provider.strip().lower(), self.model.strip().lower()
        super().save(*args, **kwargs)


class Plan(models.Model):
    class Enforcement(models.TextChoices):
        HARD = "hard", _("Hard: refuse calls past the limit")
        SOFT = "soft", _("Soft: notify, keep serving")

    code = models.SlugField(_("code"), max_length=40, unique=True, help_text=_("Matches Tenant.plan."))
    name = models.CharField(_("name"), max_length=80)
    monthly_token_allowance = models.BigIntegerField(_("monthly token allowance"), null=True, blank=True)
    monthly_cost_cap = models.DecimalField(_("monthly cost cap (USD)"), max_digits=14, decimal_places=4, null=True,
                                           blank=True)
    requests_per_minute = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True)
    tokens_per_minute = models.PositiveBigIntegerField(_("tokens per minute"), null=True, blank=True)
    # Knowledge-base size (enforced by knowledge.limits). Empty: no plan limit; the installation's
    # INGEST_MAX_CHUNKS_PER_DOCUMENT / _PER_TENANT ceilings apply to every plan.
    max_chunks_per_document = models.PositiveIntegerField(
        _("chunks per document"), null=True, blank=True,
        help_text=_("A larger document fails with a message naming this limit. Empty: no plan limit."),
    )
    max_chunks_per_tenant = models.PositiveBigIntegerField(
        _("chunks per team"), null=True, blank=True,
        help_text=_("All the team's knowledge bases together. Empty: no plan limit."),
    )
    enforcement = models.CharField(_("monthly limits"), max_length=4, choices=Enforcement.choices,
                                   default=Enforcement.HARD)
    monthly_fee = models.DecimalField(_("monthly fee (USD)"), max_digits=12, decimal_places=2, default=Decimal(0))

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_hard(self) -> bool:
        return self.enforcement == self.Enforcement.HARD


class Subscription(models.Model):
    """A tenant's plan. Without one, the Plan whose code equals Tenant.plan applies (none: no limits).

    The external ids are the seam for a payment provider (Stripe customer / subscription), unused here."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="billing_subscription")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    started_at = models.DateTimeField(default=timezone.now)
    external_customer_id = models.CharField(max_length=100, blank=True)
    external_subscription_id = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return f"{self.tenant} on {self.plan}"


class Subject(models.TextChoices):
    TENANT = "tenant", _("Team")
    API_KEY = "api_key", _("API key")
    USER = "user", _("User")


class UsageCap(TenantModel):
    """A tenant admin's monthly cap on one API key or one user (always enforced hard)."""

    kind = models.CharField(max_length=10, choices=[c for c in Subject.choices if c[0] != Subject.TENANT])
    subject_id = models.BigIntegerField()
    monthly_token_limit = models.BigIntegerField(_("monthly tokens"), null=True, blank=True)
    monthly_cost_limit = models.DecimalField(_("monthly cost (USD)"), max_digits=14, decimal_places=4, null=True,
                                             blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "kind", "subject_id"], name="billing_cap_subject")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.subject_id}"


class UsageRecord(TenantModel):
    """One provider call, append-only. Updates are refused by a database trigger (migration 0002)."""

    created_at = models.DateTimeField(db_index=False)
    stage = models.CharField(max_length=20, choices=STAGE_CHOICES)
    idempotency_key = models.CharField(max_length=200)
    user_id = models.BigIntegerField(null=True, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    assistant_id = models.BigIntegerField(null=True, blank=True)
    conversation_id = models.BigIntegerField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    document_id = models.BigIntegerField(null=True, blank=True)
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=120)
    server = models.CharField(max_length=200, blank=True)
    fallback_from = models.CharField(max_length=200, blank=True)
    input_tokens = models.IntegerField(default=0)
    cached_input_tokens = models.IntegerField(default=0)
    output_tokens = models.IntegerField(default=0)
    estimated = models.BooleanField(default=False)
    latency_ms = models.FloatField(null=True, blank=True)
    price = models.ForeignKey(Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    price_tier = models.SmallIntegerField(default=0)  # 1: the prompt was above the price's tier threshold
    cost = models.DecimalField(**MONEY, default=Decimal(0))

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="billing_usage_idempotency"),
        ]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="billing_usage_time"),
            models.Index(fields=["tenant", "message_id"], name="billing_usage_message",
                         condition=Q(message_id__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.stage} {self.provider}/{self.model} {self.input_tokens}+{self.output_tokens}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("usage records are append-only")
        super().save(*args, **kwargs)


class UsageDaily(TenantModel):
    """Rollup of the ledger per UTC day along each dimension the usage page breaks down by, kept in step inside
    the ledger write's statement. Every call adds to one row of each dimension:

        model      provider, model, price_version_id   (also the statement's lines)
        stage      stage                                (also the totals and the per-day series)
        assistant  assistant_id (NULL: none)
        api_key    api_key_id (NULL: the web app)

    One row per dimension value keeps a month of a busy team to a few thousand rows, so the page reads the
    same amount however large the ledger grows; the columns a dimension does not use stay empty.
    """

    class Dimension(models.TextChoices):
        MODEL = "model"
        STAGE = "stage"
        ASSISTANT = "assistant"
        API_KEY = "api_key"

    day = models.DateField()
    dimension = models.CharField(max_length=10, choices=Dimension.choices)
    provider = models.CharField(max_length=40, blank=True, default="")
    model = models.CharField(max_length=120, blank=True, default="")
    price_version_id = models.BigIntegerField(null=True)
    stage = models.CharField(max_length=20, blank=True, default="")
    assistant_id = models.BigIntegerField(null=True)
    api_key_id = models.BigIntegerField(null=True)
    calls = models.IntegerField(db_default=0)
    estimated_calls = models.IntegerField(db_default=0)
    input_tokens = models.BigIntegerField(db_default=0)
    cached_input_tokens = models.BigIntegerField(db_default=0)
    output_tokens = models.BigIntegerField(db_default=0)
    cost = models.DecimalField(**MONEY, db_default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "dimension", "provider", "model", "price_version_id", "stage",
                        "assistant_id", "api_key_id"],
                name="billing_daily_key", nulls_distinct=False,
            ),
        ]


class UsageConversation(TenantModel):
    """Running totals per conversation, with the first and last UTC day it used a model: "top conversations by
    cost" reads the conversations active in a period from here, already summed, instead of the ledger."""

    conversation_id = models.BigIntegerField()
    first_day = models.DateField()
    last_day = models.DateField()
    calls = models.IntegerField(db_default=0)
    input_tokens = models.BigIntegerField(db_default=0)
    cached_input_tokens = models.BigIntegerField(db_default=0)
    output_tokens = models.BigIntegerField(db_default=0)
    cost = models.DecimalField(**MONEY, db_default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "conversation_id"], name="billing_conversation_key"),
        ]
        indexes = [
            # "Top conversations": read in cost order and stop at the first ten active in the period.
            models.Index("tenant", models.F("cost").desc(),
                         (models.F("input_tokens") + models.F("output_tokens")).desc(), name="billing_conversation_top"),
        ]


class QuotaCounter(TenantModel):
    """Used and reserved amounts of one subject (the team, an API key, a user) for one calendar month.

    The reservation is a single conditional upsert on these rows (billing/quota.py): the row lock makes
    concurrent reservations from any number of processes queue up, and the condition refuses the one that
    would pass a hard limit. The *_cap columns carry the limits in force into that statement (and show the
    limits last applied).
    """

    kind = models.CharField(max_length=10, choices=Subject.choices)
    subject_id = models.BigIntegerField(db_default=0)
    period_start = models.DateField()
    used_tokens = models.BigIntegerField(db_default=0)
    used_cost = models.DecimalField(**MONEY, db_default=Decimal(0))
    reserved_tokens = models.BigIntegerField(db_default=0)
    reserved_cost = models.DecimalField(**MONEY, db_default=Decimal(0))
    token_cap = models.BigIntegerField(null=True)
    cost_cap = models.DecimalField(max_digits=14, decimal_places=4, null=True)
    hard = models.BooleanField(db_default=False)  # token_cap/cost_cap refuse calls (else they only notify)
    rpm_cap = models.IntegerField(null=True)
    tpm_cap = models.BigIntegerField(null=True)
    window_start = models.DateTimeField(null=True)
    window_requests = models.IntegerField(db_default=0)
    window_tokens = models.BigIntegerField(db_default=0)
    notified_pct = models.SmallIntegerField(db_default=0)  # highest soft-limit notice sent: 0, 80 or 100

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "subject_id", "period_start"],
                                    name="billing_counter_key"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.subject_id} {self.period_start:%Y-%m}"


class QuotaReservation(TenantModel):
    class State(models.TextChoices):
        OPEN = "open"
        SETTLED = "settled"
        RELEASED = "released"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    period_start = models.DateField()
    window_start = models.DateTimeField(null=True)
    api_key_id = models.BigIntegerField(null=True)
    user_id = models.BigIntegerField(null=True)
    tokens = models.BigIntegerField()
    cost = models.DecimalField(**MONEY)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["expires_at"], name="billing_reservation_open", condition=Q(state="open")),
        ]

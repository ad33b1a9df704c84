"""Model servers the gateway routes to.

Platform pools (staff, Django admin) hold servers of one kind; env configuration adds pools too (see
llm/registry.py). Tenants may add their own OpenAI-compatible provider with their own key (TenantProvider).
Live state (in-flight counts, cooldowns, discovered models, latency) lives in Redis, not here.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import UniqueConstraint
from django.utils.translation import gettext_lazy as _

from accounts.models import TenantModel
from llm.crypto import encrypt_secret, secret_hint

pool_name_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]{0,39}$",
    _("Lower-case letters, digits, '.', '_' and '-' only (used in targets such as 'gpu/llama3.2')."),
)


class Kind(models.TextChoices):
    OLLAMA = "ollama", _("Ollama (native API)")
    OPENAI = "openai", _("OpenAI or OpenAI-compatible")


class Dialect(models.TextChoices):
    """How far an OpenAI-compatible server follows OpenAI (decides parameter mapping)."""

    OPENAI = "openai", _("OpenAI")
    LLAMACPP = "llamacpp", _("llama.cpp server (top_k, repeat_penalty; JSON via json_object + schema)")
    GENERIC = "generic", _("Other OpenAI-compatible (vLLM, LM Studio, Ollama /v1, Gemini, xAI)")


class Strategy(models.TextChoices):
    LEAST_BUSY = "least_busy", _("Least busy (shared in-flight counts)")
    ROUND_ROBIN = "round_robin", _("Round robin")
    RANDOM = "random", _("Random")


class Pool(models.Model):
    name = models.CharField(_("name"), max_length=40, unique=True, validators=[pool_name_validator])
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.OLLAMA)
    dialect = models.CharField(
        _("dialect"), max_length=10, choices=Dialect.choices, default=Dialect.GENERIC,
        help_text=_("OpenAI-compatible pools only."),
    )
    strategy = models.CharField(_("strategy"), max_length=12, choices=Strategy.choices, default=Strategy.LEAST_BUSY)
    is_local = models.BooleanField(
        _("self-hosted"), default=True,
        help_text=_("Servers run on infrastructure you control; allowed for tenants with a local-only policy."),
    )
    provider_label = models.CharField(
        _("billing provider"), max_length=40, blank=True,
        help_text=_("Provider name for prices on the usage ledger (e.g. openai, gemini, ollama). "
                    "Blank: derived from the kind and URL."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    queue_timeout_s = models.FloatField(_("queue timeout (s)"), default=30.0, validators=[MinValueValidator(0)])
    max_queue = models.PositiveIntegerField(_("max waiting requests"), default=200)
    max_attempts = models.PositiveSmallIntegerField(_("attempts per request"), default=3,
                                                    validators=[MinValueValidator(1)])
    connect_timeout_s = models.FloatField(_("connect timeout (s)"), default=3.0, validators=[MinValueValidator(0.1)])
    first_token_timeout_s = models.FloatField(_("first-token timeout (s)"), default=120.0,
                                              validators=[MinValueValidator(0.1)])
    idle_timeout_s = models.FloatField(_("idle stream timeout (s)"), default=30.0, validators=[MinValueValidator(0.1)])
    description = models.CharField(_("description"), max_length=200, blank=True)
    context_windows = models.JSONField(
        _("context windows"), default=dict, blank=True,
        help_text=_('Tokens each model accepts (prompt and answer), when the servers do not say or should not be '
                    'trusted: {"llama3.2": 8192, "*": 4096}. Wins over what the servers report.'),
    )
    # Last field: the name shadows the `models` module inside this class body.
    models = models.JSONField(
        _("models"), default=list, blank=True,
        help_text=_("Models offered in the assistant picker. Ollama pools also discover models from /api/tags."),
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if self.name.startswith("tenant"):
            raise ValidationError({"name": _("Names starting with 'tenant' are reserved for tenants' own providers.")})
        if not isinstance(self.models, list) or not all(isinstance(m, str) for m in self.models):
            raise ValidationError({"models": _("A list of model names.")})
        windows = self.context_windows or {}
        if not isinstance(windows, dict) or not all(
                isinstance(m, str) and isinstance(n, int) and not isinstance(n, bool) and 256 <= n <= 2_097_152
                for m, n in windows.items()):
            raise ValidationError({"context_windows": _(
                'An object of model name to tokens (256 to 2097152), e.g. {"llama3.2": 8192}.')})


class PoolServer(models.Model):
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="servers")
    name = models.CharField(_("name"), max_length=60)
    base_url = models.URLField(
        _("base URL"), max_length=300,
        help_text=_("Ollama: http://host:11434 · OpenAI-compatible: the /v1 base, e.g. https://api.openai.com/v1"),
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_hint = models.CharField(max_length=12, blank=True, editable=False)
    weight = models.FloatField(_("weight"), default=1.0, validators=[MinValueValidator(0.01)])
    max_slots = models.PositiveSmallIntegerField(
        _("slots"), default=1, validators=[MinValueValidator(1)],
        help_text=_("Concurrent requests this server takes (Ollama: OLLAMA_NUM_PARALLEL, usually 1)."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    # Filled in by health checks; shown to staff.
    discovered_models = models.JSONField(default=list, blank=True, editable=False)
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=500, blank=True, editable=False)

    class Meta:
        ordering = ["pool__name", "name"]
        constraints = [models.UniqueConstraint(fields=["pool", "name"], name="llm_uniq_server_name")]

    def __str__(self) -> str:
        return f"{self.pool_id}:{self.name}"

    def set_api_key(self, plain: str) -> None:
        self.api_key_encrypted = encrypt_secret(plain)
        self.api_key_hint = secret_hint(plain) if plain else ""


class TenantProvider(TenantModel):
    """A tenant's own OpenAI-compatible endpoint and key. The key is stored encrypted and never shown again."""

    name = models.CharField(
        _("name"), max_length=40,
        validators=[RegexValidator(r"^[a-z0-9][a-z0-9_.-]{0,39}$", _("Lower-case letters, digits, '.', '_', '-'."))],
    )
    base_url = models.URLField(_("base URL"), max_length=300, help_text=_("e.g. https://api.openai.com/v1"))
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_hint = models.CharField(max_length=12, blank=True, editable=False)
    self_hosted = models.BooleanField(
        _("self-hosted"), default=False,
        help_text=_("The endpoint runs on servers you control; allowed under the local-models-only policy."),
    )
    max_concurrency = models.PositiveSmallIntegerField(_("max concurrent requests"), default=4,
                                                       validators=[MinValueValidator(1)])
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # Last field: the name shadows the `models` module inside this class body.
    models = models.JSONField(_("models"), default=list)

    class Meta:
        ordering = ["name"]
        constraints = [UniqueConstraint(fields=["tenant", "name"], name="llm_uniq_tenant_provider_name")]

    def __str__(self) -> str:
        return f"tenant:{self.name}"

    def __repr__(self) -> str:  # never echo the key, even encrypted
        return f"<TenantProvider {self.pk} {self.name}>"

    @property
    def pool_name(self) -> str:
        return f"tenant:{self.name}"

    def set_api_key(self, plain: str) -> None:
        self.api_key_encrypted = encrypt_secret(plain)
        self.api_key_hint = secret_hint(plain) if plain else ""

"""The one settings module: everything that differs between machines comes from the environment."""

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def env_mapping(name: str, cast) -> dict:
    """A "key=value,key=value" variable (django-environ's dict cast splits on ";", not on the comma)."""
    pairs = (item.rsplit("=", 1) for item in env.list(name, default=[]))
    return {key.strip(): cast(value.strip()) for key, value in pairs}


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="dev-only-insecure-key-change-me" if DEBUG else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env("SITE_URL", default="http://localhost:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "csp",
    "accounts",
    "billing",
    "llm",
    "knowledge",
    "knowledge.search",
    "chat",
]

MIDDLEWARE = [
    "accounts.middleware.RequestIdMiddleware",
    # Early: streaming responses give their database connection back; a full pool answers 503, not 500.
    "config.connections.ConnectionMiddleware",
    # /healthz and /readyz before the host check: probes come by container address, not by a served host name.
    "config.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Serves /static/ from the app itself (on-premise installs have no CDN or front proxy to lean on).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.TenantMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.tenancy",
                "billing.context_processors.usage_banner",
            ],
        },
    },
]

# PostgreSQL with pgvector. scripts/postgres_redis.py starts an embedded one and exports DATABASE_URL.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://ragdesk@127.0.0.1:54329/ragdesk")}
# Our backend subclass keeps the row-level-security tenant setting in step with the request's tenant.
DATABASES["default"]["ENGINE"] = "config.dbbackend"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Under ASGI (uvicorn) every request runs in a thread of its own, so per-thread persistent connections mean a new
# connection per request (5-15 ms). DB_POOL_MAX > 0 gives the process a psycopg connection pool instead
# (Django's advice for async servers); set it for the uvicorn process, not for forking Celery workers.
DB_POOL_MAX = env.int("DB_POOL_MAX", default=0)
if DB_POOL_MAX > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": DB_POOL_MAX, "timeout": 10}
DATABASES["default"].setdefault("OPTIONS", {})
# Tenant-filtered HNSW scans must keep going until k rows pass the filter.
DATABASES["default"]["OPTIONS"]["options"] = "-c hnsw.iterative_scan=relaxed_order"
DATABASES["default"]["TEST"] = {"NAME": env("TEST_DATABASE_NAME", default="test_ragdesk")}
# Row-level security (README "Tenancy"): the key that signs the scope the app sends PostgreSQL. Empty: derived
# from SECRET_KEY. scripts/postgres_redis.py keeps one in var/rls.key for its embedded PostgreSQL. The database
# holds it too (installed by a superuser: scripts/postgres_redis.py, or `manage.py rls_install` with
# DATABASE_ADMIN_URL).
_rls_key_file = BASE_DIR / "var" / "rls.key"
DATABASE_RLS_KEY = env("DATABASE_RLS_KEY", default=_rls_key_file.read_text().strip() if _rls_key_file.exists() else "")
# A superuser URL for `rls_install` (and `migrate`, which installs the guard when it is missing). Not for the app.
DATABASE_ADMIN_URL = env("DATABASE_ADMIN_URL", default="")
# Read replicas (README "Read replicas"; config/replicas.py): streaming replicas of the primary, aliases
# "replica_0", "replica_1"... Search reads from one that has the tenant's last write and lags at most
# DATABASE_REPLICA_MAX_LAG_SECONDS; everything else stays on the primary.
DATABASE_REPLICA_URLS = env.list("DATABASE_REPLICA_URLS", default=[])
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=5.0)


def replica_database(url: str) -> dict:
    """A replica's database settings: the primary's (backend, pool, options) at the replica's address. Tests
    read the primary's test database through it (a mirror)."""
    primary, address = DATABASES["default"], env.db_url_config(url)
    # A replica that does not answer delays one search by at most 3 s, then is left alone for a while.
    options = {"connect_timeout": 3, **primary["OPTIONS"], **address.get("OPTIONS", {})}
    if "pool" in options:
        options["pool"] = {**options["pool"], "timeout": 3}
    return {**primary, **address, "ENGINE": primary["ENGINE"], "OPTIONS": options, "TEST": {"MIRROR": "default"}}


for _index, _url in enumerate(DATABASE_REPLICA_URLS):
    DATABASES[f"replica_{_index}"] = replica_database(_url)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
SESSION_ENGINE = "django.contrib.sessions.backends.db"

CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True  # a killed worker's task is redelivered, so tasks must be idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# celery_compat: workers survive a broker restart with tasks in flight (Celery 5.7); jobs: the sweep task.
CELERY_IMPORTS = ["config.celery_compat", "config.jobs"]
CELERY_BEAT_SCHEDULE: dict = {}
# Background jobs (config/jobs.py; README "Architecture"): a claimed job's process beats every
# JOBS_HEARTBEAT_SECONDS; Celery beat sweeps every JOBS_SWEEP_SECONDS, and a running job silent for
# JOBS_STALE_AFTER_SECONDS is dead (requeued or failed by its kind), so a killed worker's job moves on within
# stale + sweep (45 s).
JOBS_HEARTBEAT_SECONDS = env.float("JOBS_HEARTBEAT_SECONDS", default=5.0)
JOBS_STALE_AFTER_SECONDS = env.float("JOBS_STALE_AFTER_SECONDS", default=30.0)
JOBS_SWEEP_SECONDS = env.float("JOBS_SWEEP_SECONDS", default=15.0)
CELERY_BEAT_SCHEDULE["jobs-sweep"] = {
    "task": "jobs.sweep", "schedule": JOBS_SWEEP_SECONDS,
    "options": {"queue": "maintenance", "expires": JOBS_SWEEP_SECONDS},  # the next sweep makes a late one moot
}

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# Security (README "Security"). Production mode is DEBUG off: HTTPS-only defaults and closed sign-up follow
# from it unless a variable says otherwise (an on-premise install served over plain HTTP sets HTTPS_ONLY=false).
SIGNUP_OPEN = env.bool("SIGNUP_OPEN", default=DEBUG)  # off: people join by invitation only
HTTPS_ONLY = env.bool("HTTPS_ONLY", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS_ONLY)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes from inside a cluster speak plain HTTP
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=HTTPS_ONLY)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=HTTPS_ONLY)
LANGUAGE_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if HTTPS_ONLY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS_ONLY)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS_ONLY)
# uvicorn already trusts X-Forwarded-Proto/-For from FORWARDED_ALLOW_IPS (default: loopback). Other servers, or a
# proxy uvicorn does not trust, name the header the TLS-terminating proxy sets, e.g. X-Forwarded-Proto.
if _proxy_ssl_header := env("SECURE_PROXY_SSL_HEADER", default=""):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
# The UI serves all its own scripts and styles: nothing inline, no eval, nothing from elsewhere. The API docs
# need no exception (split Swagger view, templates/drf_spectacular/); data: images are Swagger UI's CSS icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF], "script-src": [SELF], "style-src": [SELF], "img-src": [SELF, "data:"],
        "connect-src": [SELF], "font-src": [SELF], "object-src": [NONE], "base-uri": [SELF],
        "form-action": [SELF], "frame-ancestors": [NONE],
    },
}
# Sign-in throttling (django-axes, accounts/throttle.py): LOGIN_FAILURE_LIMIT wrong passwords for one account,
# or LOGIN_FAILURE_LIMIT_PER_ADDRESS from one client address (offices share one), pause sign-in for
# LOGIN_LOCKOUT_MINUTES after the last failure. A successful password reset lifts the account's pause.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_FAILURE_LIMIT_PER_ADDRESS = env.int("LOGIN_FAILURE_LIMIT_PER_ADDRESS", default=30)
LOGIN_LOCKOUT_MINUTES = env.int("LOGIN_LOCKOUT_MINUTES", default=15)
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "accounts.throttle.LoginThrottleHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair: per account AND per address
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "accounts.throttle.login_username"
AXES_LOCKOUT_CALLABLE = "accounts.views.login_locked_out"
AXES_RESET_ON_SUCCESS = False  # a success would also clear the address's count: one own account resets a spray
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins are not kept (no purge job for an ever-growing table)

LANGUAGE_CODE = env("LANGUAGE_CODE", default="en")
LANGUAGES = [("en", _("English")), ("ko", _("Korean"))]
LOCALE_PATHS = [BASE_DIR / "config" / "locale"]
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
WHITENOISE_USE_FINDERS = True  # serve straight from the apps' static folders; collectstatic is optional
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
# Uploaded originals: "local" files under MEDIA_ROOT (compose mounts one volume into every web and worker
# container), or "s3", an S3-compatible bucket (django-storages), for web and workers on different hosts. A dotted
# storage class works too. django-storages reads the AWS_* settings; no key: boto3's own chain (instance role...).
FILE_STORAGE_BACKEND = env("FILE_STORAGE_BACKEND", default="local")
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default="") or None  # MinIO, Ceph, R2...; none: AWS itself
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="") or None
AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", default="") or None
AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", default="") or None
AWS_LOCATION = env("AWS_LOCATION", default="")  # key prefix inside the bucket
AWS_S3_FILE_OVERWRITE = False  # as with local files, a name in use gets a suffix instead of being overwritten
_STORAGE_CLASSES = {"local": "django.core.files.storage.FileSystemStorage", "s3": "storages.backends.s3.S3Storage"}
STORAGES = {
    "default": {"BACKEND": _STORAGE_CLASSES.get(FILE_STORAGE_BACKEND, FILE_STORAGE_BACKEND)},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="ragdesk <noreply@localhost>")
# For EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend (invitations, password resets, quota notices).
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)

# Encrypts tenants' own provider keys at rest (Fernet keys, comma separated, newest first).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        # Browser calls with the session cookie; DRF enforces CSRF on unsafe methods for these.
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasTenant"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "config.pagination.LimitOffsetPagination",  # limit clamped, bad values 400
    # DRF's parsers, refusing U+0000 anywhere in the data (PostgreSQL cannot store it): 400, not a DataError
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser", "config.parsers.FormParser",
                               "config.parsers.MultiPartParser"],
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "accounts.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ragdesk API",
    "DESCRIPTION": "Knowledge bases, retrieval, chat and usage for one tenant, authenticated by a tenant API key.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar's static files: closed networks have no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Error responses (400/401/403/404...) with their body schema on every operation (accounts/schema.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "accounts.schema.document_errors"],
    "ENUM_NAME_OVERRIDES": {
        "EvalRunStatusEnum": "knowledge.search.models.EvalRun.Status",
        "DocumentStatusEnum": "knowledge.models.Document.Status",  # else a "StatusA13Enum" and a check warning
    },
}

INVITATION_TTL_HOURS = env.int("INVITATION_TTL_HOURS", default=72)
# The demo tenant's owner that `manage.py seed_demo` (run by `make run`) creates.
DEMO_EMAIL = env("DEMO_EMAIL", default="demo@ragdesk.local")
DEMO_PASSWORD = env("DEMO_PASSWORD", default="ragdesk-demo")

# Knowledge bases and ingestion (knowledge app; README "Knowledge bases").
DEFAULT_EMBEDDING_MODEL = env("DEFAULT_EMBEDDING_MODEL", default="use-multilingual")
# Hybrid search runs its dense side on a second connection beside the BM25 side (knowledge/search/parallel.py).
SEARCH_SIDES_IN_PARALLEL = env.bool("SEARCH_SIDES_IN_PARALLEL", default=True)
# Evaluation runs (knowledge/search/evaluation/): a queued run no worker took for this long fails; the worker
# task's time limit.
EVAL_QUEUE_TIMEOUT_S = env.int("EVAL_QUEUE_TIMEOUT_S", default=600)
EVAL_TIME_LIMIT_S = env.int("EVAL_TIME_LIMIT_S", default=3600)
EMBEDDING_MODELS = env.list("EMBEDDING_MODELS", default=[DEFAULT_EMBEDDING_MODEL])  # offered for new KBs
# KBs on a fast packaged model (knowledge.vectors.AUTO_UPGRADED) get their vectors re-embedded with this one in
# the background once their ingestion has settled, then switched over at once (README "Vector upgrades"): the
# multilingual e5 finds passages across Korean and English where USE cannot (.65/.69 against .50/.51 hybrid
# nDCG@10 on the cross-language sets). Empty: no automatic upgrade.
EMBEDDING_UPGRADE_MODEL = env("EMBEDDING_UPGRADE_MODEL", default="multilingual-e5-small")
# Threads per process for in-process embedders (torch for sentence-transformers, OpenMP for e5): web and workers
# already share few cores.
EMBEDDING_TORCH_THREADS = env.int("EMBEDDING_TORCH_THREADS", default=1)
# Evaluation and benchmark embeddings kept on disk (knowledge/search/embedding_cache.py; never the serving path).
EMBEDDING_CACHE_DIR = Path(env("EMBEDDING_CACHE_DIR", default=str(BASE_DIR / "var" / "cache" / "embeddings")))
# Default target of a search's LLM steps (expansion, compression) when the KB names none; empty: skipped.
SEARCH_LLM_MODEL = env("SEARCH_LLM_MODEL", default="")
# Dense-side weight per embedding model in hybrid fusion, over the built-in priors: "use-multilingual=0.4,...".
SEARCH_DENSE_WEIGHT_PRIORS = env_mapping("SEARCH_DENSE_WEIGHT_PRIORS", float)
# BM25 posting merges (knowledge/search/merging.py): a KB's fresh blocks are merged on the ingest queue every
# SEARCH_MERGE_AFTER_DOCUMENTS documents indexed one by one, and by the beat sweep (every
# SEARCH_MERGE_SWEEP_SECONDS) once its last indexing is that old.
SEARCH_MERGE_AFTER_DOCUMENTS = env.int("SEARCH_MERGE_AFTER_DOCUMENTS", default=10)
SEARCH_MERGE_SWEEP_SECONDS = env.float("SEARCH_MERGE_SWEEP_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["search-merge-sweep"] = {
    "task": "knowledge.search.merge_sweep", "schedule": SEARCH_MERGE_SWEEP_SECONDS,
    "options": {"queue": "maintenance", "expires": SEARCH_MERGE_SWEEP_SECONDS},
}
INGEST_MAX_UPLOAD_MB = env.int("INGEST_MAX_UPLOAD_MB", default=50)
INGEST_EMBED_BATCH = env.int("INGEST_EMBED_BATCH", default=32)
INGEST_DISPATCH_WINDOW = env.int("INGEST_DISPATCH_WINDOW", default=8)  # task messages out at once, all tenants
INGEST_QUEUE = env("INGEST_QUEUE", default="ingest")
# The job sweep requeues a run whose worker died (JOBS_*) and resends a task message the broker lost (neither
# in the queue nor taken by a worker) within ~25 s (knowledge.pipeline); a message waiting in the queue is never
# sent twice. INGEST_LOST_AFTER_SECONDS bounds what the broker cannot show: a message a worker took but never
# started (it died holding it), or any message on a broker other than Redis.
INGEST_LOST_AFTER_SECONDS = env.int("INGEST_LOST_AFTER_SECONDS", default=600)
INGEST_MAX_ATTEMPTS = env.int("INGEST_MAX_ATTEMPTS", default=5)
# A transient failure retries after this long, times 3 per further attempt (at most 15 minutes).
INGEST_RETRY_BASE_SECONDS = env.int("INGEST_RETRY_BASE_SECONDS", default=10)
# Size (knowledge.limits): ceilings for every tenant (0: none), below which each plan sets its own limits
# (billing.Plan.max_chunks_per_*). Degenerate text is refused once it would make this many chunks.
INGEST_MAX_CHUNKS_PER_DOCUMENT = env.int("INGEST_MAX_CHUNKS_PER_DOCUMENT", default=20000)
INGEST_MAX_CHUNKS_PER_TENANT = env.int("INGEST_MAX_CHUNKS_PER_TENANT", default=0)
INGEST_DEGENERATE_MIN_CHUNKS = env.int("INGEST_DEGENERATE_MIN_CHUNKS", default=100)
# A run that has embedded this long while another tenant's document waits hands over its worker slot and resumes.
INGEST_YIELD_AFTER_SECONDS = env.float("INGEST_YIELD_AFTER_SECONDS", default=120.0)

# Billing: usage ledger, prices, quotas (billing app; README "Billing").
BILLING_RESERVATION_TTL_S = env.int("BILLING_RESERVATION_TTL_S", default=900)  # unsettled reservations expire
BILLING_MAX_CALL_SECONDS = env.float("BILLING_MAX_CALL_SECONDS", default=600)  # GPU-hour prices: longest call
BILLING_INVOICE_SINK = env("BILLING_INVOICE_SINK", default="billing.invoicing.NullInvoiceSink")
CELERY_BEAT_SCHEDULE["billing-expire-reservations"] = {
    "task": "billing.reservations_expire", "schedule": 60.0, "options": {"expires": 60},
}

# LLM gateway (llm app; README "LLM gateway"). Staff add more pools in the admin.
OPENAI_API_KEY = env("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env("OPENAI_BASE_URL", default="")
OPENAI_MODELS = env.list("OPENAI_MODELS", default=["gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "gpt-4o"])
OPENAI_MAX_CONCURRENCY = env.int("OPENAI_MAX_CONCURRENCY", default=16)
OLLAMA_HOSTS = env.list("OLLAMA_HOSTS", default=[])
OLLAMA_HOST = env("OLLAMA_HOST", default="")  # Ollama's own variable: `make run` tries that server too
OLLAMA_MODEL = env("OLLAMA_MODEL", default="")
OLLAMA_NUM_PARALLEL = env.int("OLLAMA_NUM_PARALLEL", default=1)
LOCAL_LLM_URL = env("LOCAL_LLM_URL", default="")
LOCAL_LLM_PORT = env.int("LOCAL_LLM_PORT", default=8089)
LLM_ANSWER_TARGET = env("LLM_ANSWER_TARGET", default="")
LLM_CHEAP_TARGET = env("LLM_CHEAP_TARGET", default="")
LLM_POOL_STRATEGY = env("LLM_POOL_STRATEGY", default="least_busy")
LLM_QUEUE_TIMEOUT_S = env.float("LLM_QUEUE_TIMEOUT_S", default=30.0)
LLM_CONNECT_TIMEOUT_S = env.float("LLM_CONNECT_TIMEOUT_S", default=3.0)
LLM_FIRST_TOKEN_TIMEOUT_S = env.float("LLM_FIRST_TOKEN_TIMEOUT_S", default=120.0)
LLM_IDLE_TIMEOUT_S = env.float("LLM_IDLE_TIMEOUT_S", default=30.0)
LLM_HEALTH_INTERVAL_S = env.float("LLM_HEALTH_INTERVAL_S", default=15.0)
LLM_PROBE_TIMEOUT_S = env.float("LLM_PROBE_TIMEOUT_S", default=2.0)  # health checks and context-window discovery
LLM_MAX_QUEUE = env.int("LLM_MAX_QUEUE", default=200)  # calls waiting for a slot of an environment pool
# A server failing LLM_FAILURES_BEFORE_COOLDOWN calls in a row rests, from LLM_COOLDOWN_BASE_S doubling up to
# LLM_COOLDOWN_MAX_S.
LLM_FAILURES_BEFORE_COOLDOWN = env.int("LLM_FAILURES_BEFORE_COOLDOWN", default=2)
LLM_COOLDOWN_BASE_S = env.float("LLM_COOLDOWN_BASE_S", default=5.0)
LLM_COOLDOWN_MAX_S = env.float("LLM_COOLDOWN_MAX_S", default=60.0)
LLM_RESERVE_OUTPUT_TOKENS = env.int("LLM_RESERVE_OUTPUT_TOKENS", default=2048)  # reserved when a call sets no max
LLM_REDIS_PREFIX = env("LLM_REDIS_PREFIX", default="llm:")  # pool slots, server health, the runtime record
# Tenants' own provider URLs reach public addresses only (llm/netguard.py: no loopback, private, link-local/metadata,
# reserved); CIDRs listed here are allowed too, e.g. "10.20.0.0/16" for a team's on-premises GPU box. Operator
# pools (OPENAI_BASE_URL, OLLAMA_HOSTS, LOCAL_LLM_URL, the admin) are never restricted.
LLM_ALLOWED_PRIVATE_NETWORKS = env.list("LLM_ALLOWED_PRIVATE_NETWORKS", default=[])
# Per-model context windows that win over what servers say: "local/smollm2=4096,ollama/*=8192".
LLM_CONTEXT_WINDOWS = env_mapping("LLM_CONTEXT_WINDOWS", int)
OLLAMA_MAX_CONTEXT = env.int("OLLAMA_MAX_CONTEXT", default=8192)  # num_ctx asked for when the Modelfile sets none
LOCAL_LLM_CONTEXT = env.int("LOCAL_LLM_CONTEXT", default=4096)  # demo server's n_ctx (capped at the model's)
LOCAL_LLM_THREADS = env.int("LOCAL_LLM_THREADS", default=0)  # demo server's threads; 0: one per core
CELERY_BEAT_SCHEDULE["llm-health-check"] = {
    "task": "llm.tasks.llm_health_check", "schedule": LLM_HEALTH_INTERVAL_S,
    "options": {"queue": "maintenance", "expires": LLM_HEALTH_INTERVAL_S},
}

# Chat (chat app; README "Chat"): an answer no worker picked up fails after CHAT_QUEUE_TIMEOUT_S (one whose
# worker died, after JOBS_STALE_AFTER_SECONDS); a JSON chat call waits at most CHAT_API_WAIT_S for its answer.
CHAT_QUEUE_TIMEOUT_S = env.int("CHAT_QUEUE_TIMEOUT_S", default=120)
CHAT_API_WAIT_S = env.int("CHAT_API_WAIT_S", default=600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "accounts.middleware.RequestIdLogFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

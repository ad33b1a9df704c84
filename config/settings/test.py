import os
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("SECRET_KEY", "test-only")

from .base import *  # noqa: E402,F403
from .base import env  # noqa: E402

DEBUG = False
SECRET_KEY = "test-only"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed: hashing is not under test
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# The test client and the live test servers speak plain HTTP; tests of the production defaults run
# `check --deploy` in a subprocess (tests/test_deploy_check.py). Sign-up is open as under `make run`.
SECURE_SSL_REDIRECT = SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = LANGUAGE_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0
SIGNUP_OPEN = True
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=["sf2XT6L9Jz9v3ZXEl_C7lL0hN-WKGK7Sgoirt3a9_Cg="])
MEDIA_ROOT = BASE_DIR / "var" / "test-media"  # noqa: F405


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


# Tests keep their Redis keys (answer streams, pool state, broker queues) apart from an app running on the same
# Redis: message ids of the test database would otherwise collide with the app's.
REDIS_URL = _redis_db(REDIS_URL, env.int("TEST_REDIS_DB", default=15))  # noqa: F405
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
if not env("CELERY_BROKER_URL", default=""):
    CELERY_BROKER_URL = REDIS_URL
# No automatic vector upgrade (knowledge.vectors): e5 takes seconds per chunk; the tests of upgrades turn it on.
EMBEDDING_UPGRADE_MODEL = ""

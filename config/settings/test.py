import os

os.environ.setdefault("SECRET_KEY", "test-only")

from .base import *  # noqa: E402,F403
from .base import env  # noqa: E402

DEBUG = False
SECRET_KEY = "test-only"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed: hashing is not under test
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=["sf2XT6L9Jz9v3ZXEl_C7lL0hN-WKGK7Sgoirt3a9_Cg="])
MEDIA_ROOT = BASE_DIR / "var" / "test-media"  # noqa: F405

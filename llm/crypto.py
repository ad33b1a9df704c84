"""Encryption at rest for provider API keys (platform servers and tenants' own keys).

Fernet keys come from settings.FIELD_ENCRYPTION_KEYS (comma separated, newest first: new values are encrypted
with the first, old ones still decrypt). Without any configured key a key is derived from SECRET_KEY so a
development setup works; production sets FIELD_ENCRYPTION_KEYS.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(Exception):
    """The stored secret cannot be decrypted with the configured keys (rotated away or corrupted)."""


def _fernet() -> MultiFernet:
    keys = [k.strip() for k in settings.FIELD_ENCRYPTION_KEYS if k.strip()]
    if not keys:
        digest = hashlib.sha256(("ragdesk-field-encryption:" + settings.SECRET_KEY).encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(k.encode()) for k in keys])


def encrypt_secret(plain: str) -> str:
    if not plain:
        return ""
    return _fernet().encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("the stored API key cannot be decrypted with the configured keys") from exc


def secret_hint(plain: str) -> str:
    """What the UI may show of a key once it is stored: its last four characters."""
    return f"…{plain[-4:]}" if len(plain) >= 8 else "…"

import socket
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def _redis_ok(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1) as s:
            if parsed.password:
                s.sendall(f"AUTH {parsed.password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def readyz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = True
    except Exception:
        checks["database"] = False
    checks["redis"] = _redis_ok(settings.REDIS_URL)
    checks["broker"] = _redis_ok(settings.CELERY_BROKER_URL) if settings.CELERY_BROKER_URL.startswith("redis") else None
    ok = all(v is not False for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


PROBES = {"/healthz": healthz, "/readyz": readyz}


class ProbeMiddleware:
    """Answers the probes before anything reads the Host header: an orchestrator probes a container or pod by its
    address (`Host: 10.1.2.3:8000`), which ALLOWED_HOSTS rightly does not list, so CommonMiddleware would say 400."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        return probe(request) if probe else self.get_response(request)

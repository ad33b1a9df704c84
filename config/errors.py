"""Error pages: JSON under /api/, HTML elsewhere."""

from django.http import HttpResponse, JsonResponse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.views import defaults

from accounts.api_errors import error_body, json_404, json_500


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_404(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return json_500(request)
    return defaults.server_error(request)


def service_busy(request, *, retry_after: int):
    """503 with Retry-After when the server has no database connection to spare right now.

    The page is built without templates or context processors: they could need the database that is missing.
    """
    message = _("The server is busy. Please try again in a few seconds.")
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body("service_busy", message), status=503)
    else:
        page = format_html('<!doctype html><html><head><meta charset="utf-8"><title>{} · ragdesk</title></head>'
                           "<body><h1>{}</h1><p>{}</p></body></html>",
                           _("Busy"), _("The server is busy"), message)
        response = HttpResponse(page, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    return response

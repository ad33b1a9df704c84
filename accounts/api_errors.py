"""One JSON error shape for the whole API: {"error": {"code", "message", "fields"?}, "request_id"}.

Views raise and never translate: AppError (accounts.errors) carries its own status, code and headers, and a
Django ValidationError from a service or model is a 400 "invalid" with its messages per field.
"""

from django.core.exceptions import NON_FIELD_ERRORS, BadRequest, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from accounts.errors import AppError
from accounts.middleware import current_request_id
from accounts.tenancy import TenantScopeMissing


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    err = {"code": code, "message": message}
    if fields:
        err["fields"] = fields
    return {"error": err, "request_id": current_request_id()}


def _first_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        msg = _first_message(value)
        return msg if key == "non_field_errors" else f"{key}: {msg}"
    return str(detail)


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is too large."


def _django_validation_detail(exc: DjangoValidationError) -> dict | list:
    if not hasattr(exc, "error_dict"):
        return exc.messages
    fields = exc.message_dict
    if NON_FIELD_ERRORS in fields:  # a model's own checks ("__all__"): named as in every other 400
        fields["non_field_errors"] = fields.pop(NON_FIELD_ERRORS)
    return fields


def _app_error_response(exc: AppError) -> Response:
    # With fields, the message is the first field's, as for every other validation error.
    body = error_body(exc.code, _first_message(exc.fields) if exc.fields else exc.message, exc.fields)
    body["error"].update(exc.details())
    return Response(body, status=exc.status, headers=exc.headers())


def exception_handler(exc, context):
    if isinstance(exc, AppError):
        set_rollback()  # as DRF does for its own exceptions: an atomic request must not commit half a change
        return _app_error_response(exc)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(_django_validation_detail(exc))
    # Django's own refusals while the body is read (too many fields, a body over DATA_UPLOAD_MAX_MEMORY_SIZE,
    # a malformed multipart body) would otherwise become its HTML 400 page on an API route.
    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()
    elif isinstance(exc, SuspiciousOperation | BadRequest):
        exc = exceptions.ParseError(str(exc) or None)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, TenantScopeMissing):
        exc = exceptions.NotAuthenticated()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = error_body("invalid", _first_message(detail), fields=detail)
    else:
        code = getattr(exc, "default_code", "error")
        detail = getattr(exc, "detail", str(exc))
        body = error_body(str(getattr(detail, "code", code) or code), _first_message(detail))
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = "Bearer"
    headers = {k: v for k, v in response.items()}
    return Response(body, status=response.status_code, headers=headers)


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_500(request):
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)

"""OpenAPI: the API key as an HTTP bearer scheme, and the error responses every operation can give.

The error responses are added by a drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS) instead of on
each view: every API operation can answer 400/401/403/404/503 with the one error body of accounts.api_errors,
operations with a body 413 and 415 too, and a view lists its own extra ones with `extend_schema(extensions=errors(...))`.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR_COMPONENT = "Error"
EXTRA_ERRORS_KEY = "x-ragdesk-errors"

ERROR_SCHEMA = {
    "type": "object",
    "description": "The body of every API error.",
    "required": ["error", "request_id"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. invalid, not_found, "
                                                          "quota_exceeded."},
                "message": {"type": "string", "description": "Human-readable; the first problem when there are "
                                                             "several."},
                "fields": {"type": "object", "additionalProperties": True,
                           "description": "400: each field (or non_field_errors) with its messages."},
            },
            # Some errors add details, e.g. quota_exceeded: limit, scope, reset_at, retry_after_s.
            "additionalProperties": True,
        },
        "request_id": {"type": "string", "description": "Quote it when reporting a problem (X-Request-ID)."},
    },
}

ERROR_DESCRIPTIONS = {
    400: "Invalid request: a malformed body or query parameter, or an invalid field (see error.fields).",
    401: "No API key, or a malformed, unknown, revoked or expired one (WWW-Authenticate: Bearer).",
    403: "The API key lacks the scope this operation needs, or the operation is not allowed.",
    404: "Not found: the object does not exist or is not this tenant's.",
    409: "Conflicts with the object's current state.",
    413: "The request body (or the uploaded file) is larger than the limit.",
    415: "Unsupported Content-Type for the request body.",
    429: "Usage limit reached; Retry-After says when to try again.",
    502: "The model provider failed.",
    503: "Temporarily unavailable (no model or no capacity); Retry-After says when to try again.",
    504: "The answer took too long; fetch it later.",
}
DEFAULT_ERRORS = (400, 401, 403, 404, 503)


def errors(*statuses: int) -> dict:
    """`extend_schema(extensions=errors(429, 502))`: error responses an operation gives beyond the defaults."""
    return {EXTRA_ERRORS_KEY: sorted(statuses)}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "rdk_<prefix>_<secret>",
                "description": "A tenant API key: `Authorization: Bearer rdk_...` (Settings > API keys)."}


def document_errors(result, generator, request, public):
    """Postprocessing hook: the error responses and their schema on every API operation."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = set(operation.pop(EXTRA_ERRORS_KEY, []))
            if path.startswith("/api/v1/"):
                statuses.update(DEFAULT_ERRORS)
                if "requestBody" in operation:
                    statuses.update((413, 415))
            for status in sorted(statuses):
                operation["responses"].setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status],
                                                                 "content": content})
    return result

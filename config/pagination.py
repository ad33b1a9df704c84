"""List pagination for the API: DRF's limit/offset, with the query parameters checked.

DRF passes any integer through to LIMIT/OFFSET, so `?limit=` beyond PostgreSQL's bigint was a DataError (500),
and silently ignores garbage. Here a limit above MAX_LIMIT is clamped (asking for "everything" gets the
largest page), while a value that is not a whole number in range is a 400 naming the parameter.
"""

from __future__ import annotations

from rest_framework import pagination, serializers

MAX_LIMIT = 200
# Beyond any real table; keeps OFFSET well inside bigint whatever the caller sends.
MAX_OFFSET = 2**62


def _whole_number(request, name: str, *, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or int(text) < minimum:
        raise serializers.ValidationError({name: [f"A whole number of at least {minimum}."]})
    return int(text)


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request):
        limit = _whole_number(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        return min(_whole_number(request, self.offset_query_param, minimum=0) or 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (f"Number of results to return per page (default {self.default_limit}; "
                                            f"values above {self.max_limit} are clamped to {self.max_limit}).")
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"]["minimum"] = 0
        return parameters

"""An API view that raises a given exception, to see how the project's exception handler answers it.

    response = raised_through_api(QuotaExceeded("Over.", limit="requests_per_minute", retry_after_s=17))
    assert response.status_code == 429 and response["Retry-After"] == "17"
"""

from __future__ import annotations

from django.test import RequestFactory
from rest_framework.views import APIView


def raised_through_api(exc: BaseException):
    class Raising(APIView):
        authentication_classes, permission_classes = [], []

        def post(self, request):
            raise exc

    response = Raising.as_view()(RequestFactory().post("/api/v1/raising"))
    response.render()
    return response

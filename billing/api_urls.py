from django.urls import path

from billing import api

urlpatterns = [
    path("usage", api.UsageView.as_view(), name="api-usage"),
]

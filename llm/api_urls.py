from django.urls import path

from llm import api

urlpatterns = [
    path("llm/targets", api.TargetList.as_view(), name="api-llm-targets"),
    path("llm/providers", api.ProviderListCreate.as_view(), name="api-llm-provider-list"),
    path("llm/providers/<int:provider_id>", api.ProviderDetail.as_view(), name="api-llm-provider-detail"),
    path("llm/providers/<int:provider_id>/test", api.ProviderTest.as_view(), name="api-llm-provider-test"),
]

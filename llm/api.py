from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from llm import selectors, services
from llm.serializers import ProviderTestSerializer, TargetListSerializer, TenantProviderSerializer


class TargetList(APIView):
    @extend_schema(responses=TargetListSerializer, summary="Models this team may use (for assistants)")
    def get(self, request):
        tenant = request.tenant
        targets = [{"target": value, "label": label, "is_local": selectors.target_is_local(value)}
                   for value, label in selectors.target_choices(tenant=tenant)]
        return Response(TargetListSerializer({
            "default_answer_target": selectors.default_answer_target(),
            "default_cheap_target": selectors.default_cheap_target(),
            "data_policy": tenant.data_policy, "targets": targets,
        }).data)


class ProviderListCreate(generics.ListCreateAPIView):
    """The team's own OpenAI-compatible providers. The API key is write-only and stored encrypted."""

    serializer_class = TenantProviderSerializer
    required_scopes = {"GET": "admin", "POST": "admin"}
    pagination_class = None

    def get_queryset(self):
        return selectors.tenant_provider_list(tenant=self.request.tenant)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = services.tenant_provider_create(
            tenant=self.request.tenant, created_by=self.request.user if getattr(self.request.user, "pk", None)
            else None, name=data["name"], base_url=data["base_url"], api_key=data.get("api_key", ""),
            models=data.get("models") or [], self_hosted=data.get("self_hosted", False),
            max_concurrency=data.get("max_concurrency", 4),
        )


class ProviderDetail(generics.RetrieveDestroyAPIView):
    serializer_class = TenantProviderSerializer
    required_scopes = {"GET": "admin", "DELETE": "admin"}

    def get_object(self):
        return selectors.tenant_provider_get(tenant=self.request.tenant, provider_id=self.kwargs["provider_id"])

    def perform_destroy(self, instance):
        services.tenant_provider_delete(tenant=self.request.tenant, provider=instance)


class ProviderTest(APIView):
    required_scopes = {"POST": "admin"}

    @extend_schema(request=None, responses=ProviderTestSerializer,
                   summary="Check the provider's URL and key: connected, refused, unreachable or not allowed")
    def post(self, request, provider_id: int):
        provider = selectors.tenant_provider_get(tenant=request.tenant, provider_id=provider_id)
        ok, message = services.tenant_provider_test(tenant=request.tenant, provider=provider)
        return Response({"ok": ok, "message": message}, status=status.HTTP_200_OK)

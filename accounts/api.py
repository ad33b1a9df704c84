from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.permissions import request_scopes
from accounts.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    MembershipSerializer,
    TenantSerializer,
)


class MeView(APIView):
    @extend_schema(responses=TenantSerializer, summary="The tenant this key acts for")
    def get(self, request):
        data = TenantSerializer(request.tenant).data
        data["scopes"] = sorted(request_scopes(request))
        return Response(data)


class ApiKeyListCreate(generics.ListCreateAPIView):
    serializer_class = ApiKeySerializer
    required_scopes = {"GET": "admin", "POST": "admin"}

    def get_queryset(self):
        return selectors.api_key_list(tenant=self.request.tenant)

    @extend_schema(request=ApiKeySerializer, responses={201: ApiKeyCreatedSerializer})
    def post(self, request):
        serializer = ApiKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, raw = services.api_key_create(
            tenant=request.tenant, created_by=getattr(request.user, "pk", None) and request.user,
            name=serializer.validated_data["name"], scopes=serializer.validated_data["scopes"],
            expires_at=serializer.validated_data.get("expires_at"),
        )
        key.key = raw
        # The secret is in this body only: keep it out of every cache.
        return Response(ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED,
                        headers={"Cache-Control": "no-store"})


class ApiKeyDetail(generics.RetrieveDestroyAPIView):
    serializer_class = ApiKeySerializer
    required_scopes = {"GET": "admin", "DELETE": "admin"}

    def get_object(self):
        return selectors.api_key_get(tenant=self.request.tenant, key_id=self.kwargs["key_id"])

    @extend_schema(summary="Revoke an API key (it stays listed as revoked)")
    def delete(self, request, key_id):
        services.api_key_revoke(tenant=request.tenant, key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberList(generics.ListAPIView):
    serializer_class = MembershipSerializer
    required_scopes = {"GET": "admin"}

    def get_queryset(self):
        return selectors.membership_list(tenant=self.request.tenant)

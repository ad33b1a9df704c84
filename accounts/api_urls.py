from django.urls import path

from accounts import api

urlpatterns = [
    path("me", api.MeView.as_view(), name="api-me"),
    path("api-keys", api.ApiKeyListCreate.as_view(), name="api-key-list"),
    path("api-keys/<int:key_id>", api.ApiKeyDetail.as_view(), name="api-key-detail"),
    path("members", api.MemberList.as_view(), name="api-member-list"),
]

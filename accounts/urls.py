from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/sent/", views.PasswordResetDoneView.as_view(), name="password-reset-done"),
    path("reset/<uidb64>/<token>/", views.PasswordResetConfirmView.as_view(), name="password-reset-confirm"),
    path("reset/done/", views.PasswordResetCompleteView.as_view(), name="password-reset-complete"),
    path("signup/", views.signup, name="signup"),
    path("no-team/", views.no_tenant, name="no-tenant"),
    path("switch/", views.tenant_switch, name="switch"),
    path("settings/", views.settings_view, name="settings"),
    path("settings/members/", views.members, name="members"),
    path("settings/members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("settings/members/<int:membership_id>/remove/", views.member_remove, name="member-remove"),
    path("settings/invitations/<int:invitation_id>/revoke/", views.invitation_revoke, name="invitation-revoke"),
    path("invite/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("settings/api-keys/", views.api_keys, name="api-keys"),
    path("settings/api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api-key-revoke"),
]

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts import selectors, services
from accounts.decorators import tenant_admin_required, tenant_required
from accounts.forms import (
    ApiKeyForm,
    DataPolicyForm,
    EmailLoginForm,
    InvitedSignupForm,
    InviteForm,
    RoleForm,
    SignupForm,
    role_choices,
)
from accounts.middleware import SESSION_TENANT_KEY
from accounts.models import Role


class LoginView(auth_views.LoginView):
    form_class = EmailLoginForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(signup_open=settings.SIGNUP_OPEN, **kwargs)


def login_locked_out(request, original_response=None, credentials=None):
    """django-axes' answer to a sign-in while the account or the address is paused (AXES_LOCKOUT_CALLABLE)."""
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    response = render(request, "accounts/locked_out.html", {"minutes": minutes}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response


class PasswordResetView(auth_views.PasswordResetView):
    """Mails a one-time link to the address if an account has it; the page says the same either way."""

    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/email/password_reset.txt"
    subject_template_name = "accounts/email/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password-reset-done")

    def form_valid(self, form):
        # Links point at SITE_URL, like invitations, never at whatever Host header the request carried.
        self.extra_email_context = {
            "site_url": settings.SITE_URL.rstrip("/"), "hours": settings.PASSWORD_RESET_TIMEOUT // 3600,
        }
        return super().form_valid(form)


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_sent.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("accounts:password-reset-complete")

    def form_valid(self, form):
        response = super().form_valid(form)
        # Whoever reads the mailbox owns the account: lift its sign-in pause (the address's count stays).
        axes_reset(username=self.user.email)
        return response


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"


def _error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


def signup(request):
    if not settings.SIGNUP_OPEN:
        return render(request, "accounts/signup_closed.html", status=403)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user, tenant = services.user_signup(**form.cleaned_data)
        except ValidationError as exc:
            form.add_error("email", _error_text(exc))
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            request.session[SESSION_TENANT_KEY] = tenant.pk
            return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


def no_tenant(request):
    return render(request, "accounts/no_tenant.html", {"signup_open": settings.SIGNUP_OPEN})


@tenant_required
@require_POST
def tenant_switch(request):
    tenant_id = request.POST.get("tenant_id")
    allowed = {str(m.tenant_id) for m in selectors.membership_list_for_user(user=request.user)}
    if tenant_id not in allowed:
        return HttpResponseBadRequest(_("You are not a member of that team."))
    request.session[SESSION_TENANT_KEY] = int(tenant_id)
    return redirect("home")


@tenant_required
def home(request):
    return render(request, "home.html")


@tenant_admin_required
def members(request):
    is_owner = request.membership.role == Role.OWNER
    invite_form = InviteForm(request.POST or None, can_grant_owner=is_owner)
    if request.method == "POST" and invite_form.is_valid():
        try:
            services.invitation_create(tenant=request.tenant, invited_by=request.user, actor=request.membership,
                                       **invite_form.cleaned_data)
        except ValidationError as exc:
            invite_form.add_error("email", _error_text(exc))
        except PermissionDenied as exc:
            invite_form.add_error("role", str(exc))
        else:
            messages.success(request, _("Invitation sent to %(email)s.") % invite_form.cleaned_data)
            return redirect("accounts:members")
    context = {
        "memberships": selectors.membership_list(tenant=request.tenant),
        "invitations": selectors.invitation_list(tenant=request.tenant),
        "invite_form": invite_form,
        "roles": role_choices(can_grant_owner=is_owner),
        "can_manage_owners": is_owner,
    }
    return render(request, "accounts/members.html", context)


@tenant_admin_required
@require_POST
def member_role(request, membership_id: int):
    selectors.membership_get(tenant=request.tenant, membership_id=membership_id)  # 404 before validation
    form = RoleForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(_("Unknown role."))
    try:
        services.membership_change_role(
            tenant=request.tenant, membership_id=membership_id, role=form.cleaned_data["role"],
            actor=request.membership,
        )
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    return redirect("accounts:members")


@tenant_admin_required
@require_POST
def member_remove(request, membership_id: int):
    try:
        services.membership_remove(tenant=request.tenant, membership_id=membership_id, actor=request.membership)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    return redirect("accounts:members")


@tenant_admin_required
@require_POST
def invitation_revoke(request, invitation_id: int):
    services.invitation_revoke(tenant=request.tenant, invitation_id=invitation_id)
    return redirect("accounts:members")


def invitation_accept(request, token: str):
    invitation = services.invitation_by_token(raw_token=token)
    if invitation is None:
        return render(request, "accounts/invitation_invalid.html", status=404)
    if not request.user.is_authenticated:
        form = InvitedSignupForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                user, membership = services.user_signup_via_invitation(raw_token=token, **form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, _error_text(exc))
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                request.session[SESSION_TENANT_KEY] = membership.tenant_id
                return redirect("home")
        login_url = auth_views.redirect_to_login(request.get_full_path()).url
        return render(
            request, "accounts/invitation_signup.html",
            {"invitation": invitation, "form": form, "login_url": login_url},
        )
    wrong_account = request.user.email.lower() != invitation.email.lower()
    if request.method == "POST" and not wrong_account:
        membership = services.invitation_accept(raw_token=token, user=request.user)
        request.session[SESSION_TENANT_KEY] = membership.tenant_id
        return redirect("home")
    return render(
        request, "accounts/invitation_accept.html", {"invitation": invitation, "wrong_account": wrong_account},
        status=403 if wrong_account else 200,
    )


@never_cache  # the response may carry a new secret: no cached copy, no back-button replay
@tenant_admin_required
def api_keys(request):
    form = ApiKeyForm(request.POST or None)
    new_secret = None
    if request.method == "POST" and form.is_valid():
        try:
            _key, new_secret = services.api_key_create(
                tenant=request.tenant, created_by=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            form.add_error(None, _error_text(exc))
        else:
            form = ApiKeyForm()
    context = {"keys": selectors.api_key_list(tenant=request.tenant), "form": form, "new_secret": new_secret}
    return render(request, "accounts/api_keys.html", context)


@tenant_admin_required
@require_POST
def api_key_revoke(request, key_id: int):
    services.api_key_revoke(tenant=request.tenant, key_id=key_id)
    return redirect("accounts:api-keys")


@tenant_required
def settings_view(request):
    form = DataPolicyForm(request.POST or None, initial={"data_policy": request.tenant.data_policy})
    if request.method == "POST":
        if not request.membership.is_admin:
            raise PermissionDenied
        if form.is_valid():
            services.tenant_update_policy(tenant=request.tenant, **form.cleaned_data)
            messages.success(request, _("Settings saved."))
            return redirect("accounts:settings")
    return render(request, "accounts/settings.html", {"form": form})

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiKey, Role, Tenant


class EmailLoginForm(AuthenticationForm):
    username = forms.EmailField(label=_("Email"), widget=forms.EmailInput(attrs={"autofocus": True}))

    def clean_username(self):
        return self.cleaned_data["username"].lower()  # emails are stored lower-case


class SignupForm(forms.Form):
    email = forms.EmailField(label=_("Email"))
    name = forms.CharField(label=_("Your name"), max_length=120, required=False)
    tenant_name = forms.CharField(label=_("Organisation name"), max_length=120)
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class InvitedSignupForm(forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=120, required=False)
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, strip=False)

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


def role_choices(*, can_grant_owner: bool) -> list[tuple[str, str]]:
    """The roles a person may hand out: only owners make owners."""
    return [(value, label) for value, label in Role.choices if can_grant_owner or value != Role.OWNER]


class InviteForm(forms.Form):
    email = forms.EmailField(label=_("Email"), widget=forms.EmailInput(attrs={"placeholder": "name@example.com"}))
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, can_grant_owner: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices(can_grant_owner=can_grant_owner)


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class ApiKeyForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"), choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple,
        initial=["read", "chat"],
    )
    expires_at = forms.DateTimeField(
        label=_("Expires"), required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text=_("Optional; UTC. Leave empty for a key that does not expire."),
    )


class DataPolicyForm(forms.Form):
    data_policy = forms.ChoiceField(label=_("Data policy"), choices=Tenant.DataPolicy.choices)

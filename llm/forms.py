from django import forms
from django.utils.translation import gettext_lazy as _


class TenantProviderForm(forms.Form):
    name = forms.RegexField(
        label=_("Name"), max_length=40, regex=r"^[a-z0-9][a-z0-9_.-]{0,39}$",
        help_text=_("Lower-case letters, digits, '.', '_', '-'. Its models are named tenant:NAME/MODEL."),
        error_messages={"invalid": _("Use lower-case letters, digits, '.', '_' or '-'.")},
    )
    base_url = forms.URLField(label=_("Base URL"), max_length=300, assume_scheme="https",
                              initial="https://api.openai.com/v1",
                              help_text=_("The OpenAI-compatible /v1 address of the provider."))
    api_key = forms.CharField(label=_("API key"), max_length=400, required=False,
                              widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                              help_text=_("Stored encrypted. It is never shown again."))
    models = forms.CharField(label=_("Models"), max_length=2000, initial="gpt-4o-mini",
                             help_text=_("Comma-separated model names, e.g. gpt-4o-mini, gpt-4.1-mini."))
    self_hosted = forms.BooleanField(label=_("Runs on servers we control (allowed with “local models only”)"),
                                     required=False)
    max_concurrency = forms.IntegerField(label=_("Max concurrent requests"), min_value=1, max_value=256, initial=4)

from __future__ import annotations

import json

from django import forms
from django.utils.translation import gettext_lazy as _

from chat import defaults
from chat.models import Assistant
from knowledge.models import KnowledgeBase


class JSONTextField(forms.CharField):
    """A textarea holding JSON; empty means `empty`."""

    def __init__(self, *args, empty=None, **kwargs):
        self.empty = empty
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "mono"}))
        kwargs.setdefault("required", False)
        super().__init__(*args, **kwargs)

    def prepare_value(self, value):
        if value in (None, "", [], {}):
            return ""
        if isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2)

    def to_python(self, value):
        value = super().to_python(value)
        if not value.strip():
            return self.empty
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s") % {"error": exc.msg}) from exc


def _number(name: str, label, *, integer=False, required=True):
    """A generation parameter, prefilled on a new assistant with the default every assistant starts from."""
    default, low, high = defaults.PARAM_RANGES[name]
    field = forms.IntegerField if integer else forms.FloatField
    kwargs = {"min_value": low, "max_value": high, "required": required, "label": label, "initial": default}
    if not integer:
        kwargs["widget"] = forms.NumberInput(attrs={"step": "0.05"})
    return field(**kwargs)


class AssistantForm(forms.ModelForm):
    knowledge_bases = forms.ModelMultipleChoiceField(
        queryset=KnowledgeBase.all_tenants.none(), required=False, widget=forms.CheckboxSelectMultiple,
        label=_("Knowledge bases"), help_text=_("None selected: all knowledge bases of the team."))
    answer_target = forms.CharField(label=_("Answer model"), required=False, max_length=200)
    cheap_target = forms.CharField(label=_("Helper model"), required=False, max_length=200,
                                   help_text=_("Rewrites follow-up questions. Empty: the platform default."))
    few_shot = JSONTextField(label=_("Examples"), empty=[],
                             help_text=_('Optional. A JSON list like [{"user": "question", "assistant": "answer"}].'))
    retrieval = JSONTextField(label=_("Retrieval settings"), empty={},
                              help_text=_('Optional. e.g. {"k": 8, "bm25_weight": 0.45, "dense_weight": 0.55}'))
    json_schema = JSONTextField(label=_("JSON schema"), empty=None,
                                help_text=_("Optional. Answers follow this schema (for API use)."))
    temperature = _number("temperature", _("Temperature"))
    top_p = _number("top_p", _("Top p"))
    top_k = _number("top_k", _("Top k"), integer=True, required=False)
    max_tokens = _number("max_tokens", _("Max tokens"), integer=True)
    presence_penalty = _number("presence_penalty", _("Presence penalty"))
    frequency_penalty = _number("frequency_penalty", _("Frequency penalty"))

    class Meta:
        model = Assistant
        fields = ["name", "description", "knowledge_bases", "answer_mode", "answer_target", "cheap_target",
                  "system_prompt", "few_shot", "temperature", "top_p", "top_k", "max_tokens", "presence_penalty",
                  "frequency_penalty", "context_window", "retrieval", "json_schema", "is_default"]
        widgets = {"system_prompt": forms.Textarea(attrs={"rows": 14, "class": "mono"})}
        help_texts = {"answer_mode": _("Extractive answers quote the passages that answer the question, with "
                                       "citations, and need no model. The generative modes use the answer model "
                                       "below.")}

    def __init__(self, *args, tenant, target_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["knowledge_bases"].queryset = KnowledgeBase.objects.filter(tenant=tenant).order_by("name")
        # A post without the field (an older form, a script) keeps the assistant's mode, or the service's default.
        self.fields["answer_mode"].required = False
        if target_choices:
            choices = [("", _("Platform default"))] + list(target_choices)
            for name in ("answer_target", "cheap_target"):
                current = self.initial.get(name) or (self.instance and getattr(self.instance, name))
                extra = [(current, current)] if current and current not in dict(choices) else []
                self.fields[name].widget = forms.Select(choices=choices + extra)

    def validate_unique(self):
        pass  # the service checks the per-tenant name

    def service_data(self) -> dict:
        data = dict(self.cleaned_data)
        data["knowledge_bases"] = [kb.pk for kb in data.pop("knowledge_bases", [])]
        if not data.get("answer_mode"):
            data.pop("answer_mode", None)
        return data

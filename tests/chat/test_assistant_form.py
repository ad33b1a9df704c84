"""The new-assistant form starts from the parameters the default assistant uses, so saving it as shown works."""

from html.parser import HTMLParser

import pytest

from accounts.tenancy import tenant_scope
from chat import services
from chat.models import Assistant

pytestmark = pytest.mark.django_db
PARAMETERS = ["temperature", "top_p", "top_k", "max_tokens", "presence_penalty", "frequency_penalty"]


class FormValues(HTMLParser):
    """What a browser would submit for the page's form as rendered (inputs, checked boxes, selects, textareas)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self._textarea = self._select = None
        self._select_first = None

    def _add(self, name, value):
        self.values.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self._add(name, a.get("value", "on"))
            else:
                self._add(name, a.get("value") or "")
        elif tag == "textarea" and name:
            self._textarea = name
            self._add(name, "")
        elif tag == "select" and name:
            self._select, self._select_first = name, None
        elif tag == "option" and self._select:
            if self._select_first is None:
                self._select_first = a.get("value", "")
            if "selected" in a:
                self._add(self._select, a.get("value", ""))

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select" and self._select:
            if self._select not in self.values:
                self._add(self._select, self._select_first or "")
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea][-1] += data


def form_values(html: str) -> dict[str, list[str]]:
    parser = FormValues()
    parser.feed(html)
    return parser.values


def test_new_assistant_form_prefills_the_default_assistants_parameters(client_a, tenant_a):
    default = services.assistant_ensure_default(tenant=tenant_a.tenant)
    values = form_values(client_a.get("/chat/assistants/new").content.decode())
    for name in PARAMETERS:
        assert values.get(name) and values[name][0] != "", f"{name} is empty"
        assert float(values[name][0]) == getattr(default, name), name


def test_the_prefilled_form_saves_as_shown(client_a, tenant_a):
    values = form_values(client_a.get("/chat/assistants/new").content.decode())
    values["name"] = ["Support bot"]
    response = client_a.post("/chat/assistants/new", values)
    assert response.status_code == 302, response.content.decode()[-3000:]
    with tenant_scope(tenant_a.tenant):
        saved = Assistant.objects.get(name="Support bot")
        default = Assistant(tenant=tenant_a.tenant)  # what every assistant starts from
    assert {n: getattr(saved, n) for n in PARAMETERS} == {n: getattr(default, n) for n in PARAMETERS}

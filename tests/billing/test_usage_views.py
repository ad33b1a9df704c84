"""The usage page, statement, caps page, CSV exports and GET /api/v1/usage: content, access and isolation."""

import csv
import io
from decimal import Decimal

import pytest

from billing.labels import _resolvers, register_label_resolver
from billing.models import Plan
from billing.services import subscription_set
from billing.types import Stage
from tests.factories.billing import PlanFactory, record_usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage_a(tenant_a):
    """Tenant A: a few calls across stages, models, an assistant, a key and two conversations."""
    from accounts.models import ApiKey
    from accounts.tenancy import tenant_scope

    tenant = tenant_a.tenant
    with tenant_scope(tenant):
        key = ApiKey.objects.get(tenant=tenant)
    record_usage(tenant, model="gpt-4o", stage=Stage.ANSWER, input_tokens=1000, cached=400, output_tokens=300,
                 assistant_id=7, api_key_id=key.pk, conversation_id=70, message_id=700)
    record_usage(tenant, model="gpt-4o-mini", stage=Stage.CONDENSE, input_tokens=200, output_tokens=20,
                 assistant_id=7, api_key_id=key.pk, conversation_id=70, message_id=700)
    record_usage(tenant, model="gpt-4o", stage=Stage.ANSWER, input_tokens=10_000, output_tokens=1000,
                 assistant_id=8, conversation_id=71, message_id=710)
    record_usage(tenant, provider="ollama", model="bge-m3", stage=Stage.EMBEDDING, input_tokens=5000,
                 output_tokens=0, document_id=9)
    return tenant_a


@pytest.fixture
def usage_b(tenant_b):
    record_usage(tenant_b.tenant, model="grok-4", stage=Stage.ANSWER, input_tokens=777_777, output_tokens=1,
                 assistant_id=99, conversation_id=990, key="b-secret")
    return tenant_b


def test_usage_page_shows_totals_breakdowns_and_top_conversations(usage_a, usage_b, client_a):
    page = client_a.get("/usage/").content.decode()
    # Totals: 1000+200+10000+5000 input, 300+20+1000 output. Cost: 0.005 + 0.0000420 + 0.035 = $0.040042
    assert "16,200" in page and "1,320" in page and "17,520" in page
    assert "$0.0400" in page
    assert "<svg" in page and 'role="img"' in page  # the daily chart
    for label in ("gpt-4o (openai)", "gpt-4o-mini (openai)", "bge-m3 (ollama)", "Answer", "Condense question",
                  "Embedding", "Assistant #7", "Assistant #8", "Web app / background", "all scopes"):
        assert label in page, label
    assert page.index("Conversation #71") < page.index("Conversation #70")  # ordered by cost
    assert "777,777" not in page and "grok-4" not in page and "#990" not in page  # tenant B's usage


_real_assistant_resolver = _resolvers.get("assistant", lambda tenant, ids: {})


def test_labels_come_from_the_apps_above_billing(usage_a, client_a):
    register_label_resolver("assistant", lambda tenant, ids: {7: "Support bot"} if 7 in ids else {})
    try:
        page = client_a.get("/usage/").content.decode()
    finally:
        register_label_resolver("assistant", _real_assistant_resolver)
    assert "Support bot" in page and "Assistant #8" in page


def test_usage_page_in_korean(usage_a, client_a):
    client_a.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    response = client_a.get("/usage/?metric=tokens")
    assert response.status_code == 200
    assert 'lang="ko"' in response.content.decode()


def test_only_tenant_admins_see_usage(usage_a, tenant_a):
    from tests.conftest import web_client

    member = web_client(tenant_a.member, tenant_a.tenant)
    for url in ("/usage/", "/usage/export.csv", "/usage/statement/", "/usage/statement.csv", "/usage/limits/"):
        assert member.get(url).status_code == 403, url
    admin = web_client(tenant_a.admin, tenant_a.tenant)
    assert admin.get("/usage/").status_code == 200


def test_bad_period_is_a_message_not_an_error(usage_a, client_a):
    response = client_a.get("/usage/?period=2024-13")
    assert response.status_code == 200 and "Unknown month" in response.content.decode()
    assert client_a.get("/usage/export.csv?period=nonsense").status_code == 400
    custom = client_a.get("/usage/?start=2020-01-01&end=2020-01-31").content.decode()
    assert "No usage in this period." in custom


def test_csv_exports_are_per_tenant(usage_a, usage_b, client_a, client_b):
    rows = list(csv.DictReader(io.StringIO(client_a.get("/usage/export.csv").content.decode())))
    for dimension in ("model", "stage", "assistant", "api_key"):
        part = [r for r in rows if r["dimension"] == dimension]
        assert sum(int(r["total_tokens"]) for r in part) == 17_520
        assert sum(Decimal(r["cost_usd"]) for r in part) == Decimal("0.040042")
    assert {r["key"] for r in rows if r["dimension"] == "stage"} == {"answer", "condense", "embedding"}
    assert {r["label"] for r in rows if r["dimension"] == "assistant"} == {"Assistant #7", "Assistant #8",
                                                                          "No assistant"}
    detail = client_a.get("/usage/export.csv?detail=records")
    records = list(csv.DictReader(io.StringIO(b"".join(detail.streaming_content).decode())))
    assert len(records) == 4 and {r["message_id"] for r in records} == {"700", "710", ""}
    b_rows = list(csv.DictReader(io.StringIO(client_b.get("/usage/export.csv").content.decode())))
    assert [int(r["input_tokens"]) for r in b_rows if r["dimension"] == "stage"] == [777_777]
    assert "gpt-4o" not in b"".join(client_b.get("/usage/export.csv").content.split()).decode()


def test_csv_cells_cannot_run_as_formulas(tenant_a, client_a):
    register_label_resolver("assistant", lambda tenant, ids: {5: "=HYPERLINK(\"http://evil\")"})
    try:
        record_usage(tenant_a.tenant, assistant_id=5)
        body = client_a.get("/usage/export.csv").content.decode()
    finally:
        register_label_resolver("assistant", _real_assistant_resolver)
    assert "'=HYPERLINK" in body


def test_monthly_statement_html_and_csv(usage_a, client_a):
    subscription_set(tenant=usage_a.tenant, plan=PlanFactory(name="Team", monthly_fee=Decimal("49.00")))
    page = client_a.get("/usage/statement/").content.decode()
    assert "Team plan" in page and "gpt-4o (openai)" in page and "$49.04" in page  # 49 + 0.040042, rounded
    rows = list(csv.reader(io.StringIO(client_a.get("/usage/statement.csv").content.decode())))
    assert rows[0][0] == "statement"
    total = next(r for r in rows if r[3] == "total")
    assert Decimal(total[-1]) == Decimal("49.040042")
    assert next(r for r in rows if r[3] == "total_due")[-1] == "49.04"
    assert client_a.get("/usage/statement/?month=2024-99").status_code == 200  # message, current month shown
    assert client_a.get("/usage/statement.csv?month=last_7_days").status_code == 400


def test_admins_set_caps_per_key_and_member(tenant_a, client_a):
    from accounts.models import ApiKey
    from accounts.tenancy import tenant_scope
    from billing.models import UsageCap

    with tenant_scope(tenant_a.tenant):
        key = ApiKey.objects.get(tenant=tenant_a.tenant)
    response = client_a.post("/usage/limits/", {
        f"api_key-{key.pk}-tokens": "50000", f"api_key-{key.pk}-cost": "",
        f"user-{tenant_a.member.pk}-tokens": "", f"user-{tenant_a.member.pk}-cost": "2.5",
    })
    assert response.status_code == 302
    with tenant_scope(tenant_a.tenant):
        caps = {(c.kind, c.subject_id): c for c in UsageCap.objects.all()}
    assert caps[("api_key", key.pk)].monthly_token_limit == 50000
    assert caps[("user", tenant_a.member.pk)].monthly_cost_limit == Decimal("2.5")
    page = client_a.get("/usage/limits/").content.decode()
    assert 'value="50000"' in page
    # Bad input is a message, and changes nothing.
    client_a.post("/usage/limits/", {f"api_key-{key.pk}-tokens": "-5", f"api_key-{key.pk}-cost": ""})
    with tenant_scope(tenant_a.tenant):
        assert UsageCap.objects.get(kind="api_key").monthly_token_limit == 50000
    # Emptying both fields removes the cap.
    client_a.post("/usage/limits/", {f"api_key-{key.pk}-tokens": "", f"api_key-{key.pk}-cost": ""})
    with tenant_scope(tenant_a.tenant):
        assert not UsageCap.objects.filter(kind="api_key").exists()


# ---------------------------------------------------------------- API


def test_api_usage_grouped(usage_a, usage_b, api_a):
    body = api_a.get("/api/v1/usage", {"group_by": "stage"}).json()
    assert body["totals"]["total_tokens"] == 17_520 and body["totals"]["cost"] == "0.040042"
    assert body["currency"] == "USD" and body["group_by"] == "stage"
    by_stage = {r["key"]: r for r in body["results"]}
    assert set(by_stage) == {"answer", "condense", "embedding"}
    assert by_stage["embedding"]["input_tokens"] == 5000 and by_stage["embedding"]["cost"] == "0"
    assert body["allowance"]["plan"] == "Free" and body["allowance"]["tokens_used"] == 17_520
    models = api_a.get("/api/v1/usage", {"group_by": "model"}).json()["results"]
    assert models[0]["key"] == "openai/gpt-4o"  # most expensive first
    conversations = api_a.get("/api/v1/usage", {"group_by": "conversation"}).json()["results"]
    assert [r["key"] for r in conversations] == ["71", "70"]
    days = api_a.get("/api/v1/usage", {"group_by": "day", "period": "last_7_days"}).json()["results"]
    assert len(days) == 7 and sum(d["total_tokens"] for d in days) == 17_520


def test_api_usage_validation_and_scope(usage_a, api_a, tenant_a):
    bad = api_a.get("/api/v1/usage", {"period": "2024-01-05..2023-01-01"})
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["period"]
    assert api_a.get("/api/v1/usage", {"group_by": "color"}).status_code == 400
    from accounts.services import api_key_create
    from tests.conftest import api_client

    _key, raw = api_key_create(tenant=tenant_a.tenant, name="chat only", scopes=["chat"])
    assert api_client(raw).get("/api/v1/usage").status_code == 403
    assert api_client("rdk_nope_" + "x" * 30).get("/api/v1/usage").status_code == 401


def test_api_usage_is_per_tenant(usage_a, usage_b, api_b):
    body = api_b.get("/api/v1/usage", {"group_by": "assistant"}).json()
    assert body["totals"]["input_tokens"] == 777_777
    assert [r["key"] for r in body["results"]] == ["99"]


def test_api_shows_the_hard_limit_remaining(usage_a, api_a):
    subscription_set(tenant=usage_a.tenant, plan=PlanFactory(monthly_token_allowance=20_000,
                                                             monthly_cost_cap=Decimal("1"),
                                                             enforcement=Plan.Enforcement.HARD))
    allowance = api_a.get("/api/v1/usage").json()["allowance"]
    assert allowance["tokens_remaining"] == 20_000 - 17_520 and allowance["enforcement"] == "hard"
    assert allowance["cost_remaining"] == "0.959958"


def test_schema_documents_the_usage_endpoint(client):
    schema = client.get("/api/schema/").content.decode()
    assert "/api/v1/usage" in schema and "group_by" in schema


class RecordingSink:
    pushed: list = []

    def push(self, statement):
        RecordingSink.pushed.append(statement)
        return f"inv-{statement.number}"


def test_statements_go_to_the_configured_invoice_sink(usage_a, usage_b, settings):
    from django.core.management import call_command

    settings.BILLING_INVOICE_SINK = "tests.billing.test_usage_views.RecordingSink"
    RecordingSink.pushed = []
    out = io.StringIO()
    call_command("billing_statements", month="current", issue=True, stdout=out)
    by_tenant = {s.tenant_id: s for s in RecordingSink.pushed}
    assert by_tenant[usage_a.tenant.pk].total == Decimal("0.040042")
    assert by_tenant[usage_a.tenant.pk].is_open  # this month is not over
    assert by_tenant[usage_b.tenant.pk].total_tokens == 777_778
    assert "inv-tenant-a-" in out.getvalue()

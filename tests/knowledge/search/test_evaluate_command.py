"""evaluate_retrieval on a small BEIR-style folder made in the test (works on any folder of that layout)."""

import json

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Tenant
from accounts.tenancy import system_scope

CORPUS = [
    {"id": "d1", "title": "Refunds", "text": "Customers may ask for a refund within thirty days of purchase."},
    {"id": "d2", "title": "Shipping", "text": "Orders ship within two business days from our warehouse."},
    {"id": "d3", "title": "Security", "text": "Passwords must be changed every ninety days."},
    {"id": "d4", "title": "환불", "text": "구매 후 30일 이내에 환불을 요청할 수 있습니다."},
]
QUERIES = [{"id": "q1", "text": "refund within thirty days"}, {"id": "q2", "text": "how fast do orders ship"},
           {"id": "q3", "text": "password change policy"}, {"id": "q4", "text": "unjudged question"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n"


@pytest.fixture
def dataset_dir(tmp_path):
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in CORPUS))
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in QUERIES))
    (tmp_path / "qrels.tsv").write_text(QRELS)
    return tmp_path


@pytest.mark.django_db
def test_evaluate_retrieval_prints_table_and_writes_json(dataset_dir, tmp_path, capsys, settings):
    settings.EMBEDDING_CACHE_DIR = tmp_path / "cache"
    out = tmp_path / "metrics.json"
    with system_scope():
        tenants_before = Tenant.objects.count()
    call_command("evaluate_retrieval", str(dataset_dir), "--mode", "all", "--json", str(out),
                 "--embedding-model", "use-multilingual")
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "hybrid" in printed
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"bm25", "dense", "hybrid"}
    for values in metrics.values():
        assert set(values) == {"ndcg@10", "recall@10", "mrr@10"}
    assert metrics["bm25"] == {"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0}  # lexically easy on purpose
    assert metrics["hybrid"]["ndcg@10"] == 1.0
    with system_scope():
        assert Tenant.objects.count() == tenants_before  # the scratch tenant is gone


@pytest.mark.django_db
def test_evaluate_retrieval_rejects_bad_input(tmp_path):
    with pytest.raises(CommandError):
        call_command("evaluate_retrieval", str(tmp_path))
    with pytest.raises(CommandError):
        call_command("evaluate_retrieval", str(tmp_path), "--setting", "nonsense")

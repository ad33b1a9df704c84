"""Management commands on a database that was never migrated say what to run (`manage.py migrate`), instead of
dying with a raw `relation ... does not exist` (config/commands.py)."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def empty_database_url():
    """A new, empty database on the test server (no tables at all), dropped afterwards."""
    import psycopg

    url = urlparse(os.environ.get("DATABASE_URL", "postgres://ragdesk@127.0.0.1:54329/ragdesk"))
    admin = urlunparse(url._replace(path="/postgres", scheme="postgresql"))
    name = f"{os.environ.get('TEST_DATABASE_NAME', 'test_ragdesk')}_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunparse(url._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dataset_dir(tmp_path):
    """A valid BEIR-style folder with gold answers, so a command gets as far as the database."""
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"id": "d1", "title": "Refunds", "text": "Refunds in 30 days."}))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"id": "q1", "text": "refund period"}))
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "answers.jsonl").write_text(json.dumps({"query_id": "q1", "answers": ["30 days"]}))
    (tmp_path / "note.txt").write_text("a file to ingest")
    return tmp_path


@pytest.mark.parametrize("args", [
    ["evaluate_retrieval", "{dataset}", "--embedding-model", "use-multilingual"],
    ["evaluate_answers", "{dataset}"],
    ["ingest", "{dataset}/note.txt", "--tenant", "demo", "--kb", "Docs"],
    ["seed_demo"],
], ids=lambda args: args[0])
def test_command_on_an_unmigrated_database_says_to_migrate(empty_database_url, dataset_dir, args):
    env = {**os.environ, "DATABASE_URL": empty_database_url, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    args = [arg.format(dataset=dataset_dir) for arg in args]
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode != 0
    assert "manage.py migrate" in result.stderr, result.stderr[-2000:]
    assert "does not exist" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]


@pytest.mark.django_db
def test_a_migrated_database_passes_the_check():
    from config.commands import require_migrated

    require_migrated()  # the test database is migrated: no error

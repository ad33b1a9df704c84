"""The container files agree with the project (README "Deployment"): compose.yaml names every service of the
stack, the Dockerfile's final stage runs without compilers as a non-root user, and every queue the app sends
to is consumed by exactly one worker role of the entrypoint, each with its compose service. Static checks, no
container engine; scripts/stack-test runs the real stack."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import ENTRYPOINT, routed_queues, worker_kinds, worker_queues

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"db", "redis", "migrate", "web", "worker-ingest", "worker-chat", "worker-maintenance", "beat", "ollama",
            "ollama-gpu"}
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|python3-dev|libc6-dev|make|cmake)\b")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def instructions(stage: str) -> str:
    """A stage without its comment lines."""
    return "\n".join(line for line in stage.splitlines() if not line.lstrip().startswith("#"))


def test_compose_names_every_service_of_the_stack(services):
    assert set(services) >= SERVICES, f"missing: {SERVICES - set(services)}"
    assert services["db"]["image"].endswith("pgvector/pgvector:pg18}")
    assert services["ollama"]["profiles"] == ["ollama"] and services["ollama-gpu"]["profiles"] == ["ollama-gpu"]


def test_app_services_run_one_image_after_the_migrate_job(services):
    app = {name: spec for name, spec in services.items() if spec.get("image") == services["web"]["image"]}
    assert set(app) == {"migrate", "web", "worker-ingest", "worker-chat", "worker-maintenance", "beat"}
    assert services["migrate"]["command"] == ["migrate"] and services["migrate"]["restart"] == "no"
    for name, spec in app.items():
        if name != "migrate":
            assert spec["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["beat"]["deploy"]["replicas"] == 1
    # web publishes no host port of its own, so `--scale web=N` works; the proxy is the one way in.
    assert "ports" not in services["web"] and services["proxy"]["ports"]


def test_database_and_uploads_are_named_volumes_every_app_container_shares(compose, services):
    assert {"db", "uploads"} <= set(compose["volumes"])
    assert any(volume.startswith("db:") for volume in services["db"]["volumes"])
    for name in ("web", "worker-ingest", "worker-chat", "worker-maintenance", "migrate", "beat"):
        assert "uploads:/data/media" in services[name]["volumes"], name


def test_secrets_are_required_and_the_example_env_lists_them():
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "compose.yaml").read_text()))
    assert {"SECRET_KEY", "POSTGRES_PASSWORD", "POSTGRES_APP_PASSWORD"} <= required
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert required <= set(example), f"add to .env.example: {required - set(example)}"
    assert all(example[name] == "" for name in required), "the example must not ship a usable secret"


def test_every_queue_has_exactly_one_worker_role_with_its_compose_service(services):
    consumed = [queue for kind in worker_kinds() for queue in worker_queues(kind)]
    assert set(consumed) == routed_queues(), "a queue no worker consumes, or a worker on a queue nobody uses"
    assert len(consumed) == len(set(consumed)), "a queue consumed by two roles cannot be scaled on its own"
    workers = {name: spec["command"] for name, spec in services.items() if name.startswith("worker-")}
    assert workers == {f"worker-{kind}": ["worker", kind] for kind in worker_kinds()}


def test_entrypoint_refuses_an_unknown_role():
    result = subprocess.run(["sh", str(ENTRYPOINT), "worker", "gpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "worker ingest|chat|maintenance" in result.stderr


def test_demo_tenant_in_production_needs_its_own_password():
    result = subprocess.run(["sh", str(ENTRYPOINT), "migrate"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "SEED_DEMO": "true", "DEBUG": "false"})
    assert result.returncode == 1 and "DEMO_PASSWORD" in result.stderr


def test_final_image_stage_has_no_compilers_and_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", dockerfile, re.M)
    build, runtime = (instructions(stage) for stage in re.split(r"^FROM\s", dockerfile, flags=re.M)[-2:])
    assert COMPILERS.search(build), "the build stage is where compilers belong"
    assert not COMPILERS.search(runtime), COMPILERS.search(runtime)
    users = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "requirements.lock" in build  # pinned: pip installs under the lock's constraints
    assert 'ENTRYPOINT ["tini", "--", "deploy/entrypoint.sh"]' in runtime

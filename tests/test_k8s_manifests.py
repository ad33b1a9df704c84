"""deploy/k8s: each overlay renders with `kubectl kustomize`, every object is valid for the Kubernetes version we
target (kubernetes-validate's schemas), and the manifests agree with the project: every Celery queue has a
worker Deployment, beat runs alone, every container is probed and sized, and every variable they set is one the
settings (or the image's entrypoint) read. No cluster needed; skipped without a kubectl whose kustomize has
components (v4+; Debian bookworm's kubernetes-client is kubectl 1.20, too old)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.conf import settings

from tests.support.deploy import ENTRYPOINT, routed_queues, worker_queues
from tests.test_settings_documented import environment_variables, readme_table_variables

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are for: preStop `sleep` is on by default from 1.30.
KUBERNETES_VERSION = "1.30.0"
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}
SERVER_VARIABLES = {"FORWARDED_ALLOW_IPS"}  # uvicorn's own
# production with uploads in a bucket: a test-only overlay over the production one
VARIANTS = {"small": [], "production": [], "production-s3": ["s3-uploads"]}


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the kubectl package; kustomize v4+ inside)")
    version = json.loads(subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                                        text=True, timeout=60).stdout or "{}").get("kustomizeVersion", "")
    if not re.match(r"v([4-9]|\d\d)\.", version):
        pytest.skip(f"kubectl's kustomize {version or '(unknown)'} has no components: kubectl 1.24+ needed")
    return kubectl


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of deploy/k8s with every overlay's secrets.env made from the example, as the README says."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in (copy / "overlays").iterdir():
        shutil.copy(copy / "secrets.env.example", overlay / "secrets.env")
    for name, components in VARIANTS.items():
        if not (copy / "overlays" / name).exists():
            base, _ = name.split("-", 1)
            (copy / "overlays" / name).mkdir()
            (copy / "overlays" / name / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": [f"../{base}"], "components": [f"../../components/{c}" for c in components]}))
    return copy


@pytest.fixture(scope="module", params=list(VARIANTS))
def rendered(request, tree) -> list[dict]:
    result = subprocess.run([_kubectl(), "kustomize", str(tree / "overlays" / request.param)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def objects(docs, kind):
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_specs(docs):
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def config(docs) -> dict:
    (configmap,) = objects(docs, "ConfigMap").values()
    return configmap["data"]


def environment(docs, container) -> dict:
    return {**config(docs), **{item["name"]: item["value"] for item in container.get("env", [])}}


def workers(docs) -> dict[str, tuple[dict, set[str]]]:
    """Worker Deployments: name -> (container, queues consumed)."""
    found = {}
    for name, deployment in objects(docs, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["args"][0] == "worker":
            found[name] = (container, worker_queues(container["args"][1], environment(docs, container)))
    return found


def autoscalers(docs) -> dict[str, list[dict]]:
    """Deployment name -> the HorizontalPodAutoscalers and KEDA ScaledObjects that scale it."""
    found: dict[str, list[dict]] = {}
    for doc in docs:
        if doc["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            found.setdefault(doc["spec"]["scaleTargetRef"]["name"], []).append(doc)
    return found


def max_replicas(scaler: dict) -> int:
    return scaler["spec"].get("maxReplicas") or scaler["spec"]["maxReplicaCount"]


def test_every_object_is_valid_for_the_kubernetes_version(rendered):
    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue  # KEDA's own kinds: no schema in kubernetes-validate; test_keda_scales_... checks them
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {'.'.join(map(str, error.path))}: "
                        f"{error.message[:300]}", pytrace=False)


def test_every_celery_queue_has_one_worker_deployment(rendered):
    consumed = [queue for _container, queues in workers(rendered).values() for queue in queues]
    assert routed_queues() <= set(consumed), f"no worker consumes {routed_queues() - set(consumed)}"
    assert len(consumed) == len(set(consumed)), "a queue consumed by two Deployments cannot be scaled on its own"


def test_beat_runs_alone(rendered):
    beats = [d for d in objects(rendered, "Deployment").values()
             if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "beat"]
    assert [b["metadata"]["name"] for b in beats] == ["ragdesk-beat"]
    (beat,) = beats
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert "ragdesk-beat" not in autoscalers(rendered)


def test_every_other_deployment_has_one_autoscaler_and_a_disruption_budget(rendered):
    deployments = objects(rendered, "Deployment")
    scaled = autoscalers(rendered)
    assert set(scaled) <= set(deployments)
    budgets = objects(rendered, "PodDisruptionBudget").values()
    for name, deployment in deployments.items():
        if name == "ragdesk-beat":
            continue
        assert len(scaled.get(name, [])) == 1, f"{name}: {len(scaled.get(name, []))} autoscalers"
        assert "replicas" not in deployment["spec"], f"{name}: its autoscaler owns the replica count"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets), name


def test_long_running_containers_are_probed(rendered):
    """Web on /healthz and /readyz; workers and beat answer `celery inspect ping` as the node the entrypoint
    names them."""
    script = ENTRYPOINT.read_text()
    for deployment in objects(rendered, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        probes = [container.get(kind) for kind in ("startupProbe", "livenessProbe", "readinessProbe")]
        assert all(probes), f"{deployment['metadata']['name']} lacks a probe"
        role, *rest = container["args"]
        if role == "web":
            assert [p["httpGet"]["path"] for p in probes] == ["/healthz", "/healthz", "/readyz"]
            continue
        node = {"worker": rest[0] if rest else "", "beat": "celerybeat"}[role]
        if role == "worker":
            assert f'-n "{node}@%h"' in script
        else:
            assert "--enable-remote-control" in rest  # beat answers pings only then
        for probe in probes:
            assert f'--destination "{node}@$HOSTNAME"' in probe["exec"]["command"][-1]


def test_every_container_requests_resources(rendered):
    for owner, pod in pod_specs(rendered):
        for container in pod["containers"]:
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), owner["metadata"]["name"]
            assert "memory" in resources.get("limits", {}), owner["metadata"]["name"]


def test_pods_run_as_the_image_user_on_a_read_only_root(rendered):
    """Writable: /tmp everywhere (uploads in flight, caches), and beat's schedule file where the entrypoint
    puts it."""
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    schedule = re.search(r"celery -A config beat .*-s (\S+)", ENTRYPOINT.read_text()).group(1)
    for owner, pod in pod_specs(rendered):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
            needed = {"/tmp", str(Path(schedule).parent)} if container["args"][0] == "beat" else {"/tmp"}
            assert needed <= writable, owner["metadata"]["name"]


def test_uploads_are_shared_by_web_and_the_ingest_workers(rendered):
    cfg = config(rendered)
    claims = objects(rendered, "PersistentVolumeClaim")
    if cfg.get("FILE_STORAGE_BACKEND") == "s3":
        assert not claims
        return
    assert "ragdesk-media" in claims
    ingest = [name for name, (_c, queues) in workers(rendered).items() if settings.INGEST_QUEUE in queues]
    for name in ["ragdesk-web", *ingest]:
        (container,) = objects(rendered, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
        assert cfg["MEDIA_ROOT"] in {m["mountPath"] for m in container["volumeMounts"]}, name


def test_variables_are_declared_settings_or_the_entrypoints(rendered):
    names = set()
    for _owner, pod in pod_specs(rendered):
        names |= {item["name"] for container in pod["containers"] for item in container.get("env", [])}
    for doc in rendered:
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set(doc.get("data", {}))
    entrypoint = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()))
    settings_names = environment_variables()
    assert names <= settings_names | entrypoint | SERVER_VARIABLES, names - settings_names - entrypoint
    assert names - settings_names <= readme_table_variables(), "document these in a README table"


def test_ingest_dispatch_window_covers_every_ingest_process(rendered):
    """The dispatcher keeps INGEST_DISPATCH_WINDOW task messages out: fewer than the ingest processes at full
    scale would leave some idle while documents wait."""
    (name, (container, _queues)), = [(n, w) for n, w in workers(rendered).items() if settings.INGEST_QUEUE in w[1]]
    (scaler,) = autoscalers(rendered)[name]
    processes = max_replicas(scaler) * int(environment(rendered, container)["INGEST_CONCURRENCY"])
    assert int(config(rendered)["INGEST_DISPATCH_WINDOW"]) >= processes


def test_keda_scales_workers_on_the_queues_they_consume(rendered):
    consumed = {name: queues for name, (_c, queues) in workers(rendered).items()}
    for scaled in objects(rendered, "ScaledObject").values():
        target = scaled["spec"]["scaleTargetRef"]["name"]
        lists = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"] if t["type"] == "redis"}
        assert lists and lists <= consumed[target], target
        assert scaled["spec"]["minReplicaCount"] >= 1  # never 0: beat's sweeps and answers need a worker at once


def test_secrets_come_from_an_ignored_file():
    """Each overlay generates ragdesk-secrets from its secrets.env, which git ignores; the example's empty
    SECRET_KEY and DATABASE_URL stop a pod that was given no real ones."""
    example = dict(line.split("=", 1) for line in (K8S / "secrets.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert example["SECRET_KEY"] == "" and example["DATABASE_URL"] == ""
    for overlay in (K8S / "overlays").iterdir():
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert {"name": "ragdesk-secrets", "envs": ["secrets.env"]}.items() <= kustomization["secretGenerator"][0].items()
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(overlay / "secrets.env")])
        assert ignored.returncode == 0, f"{overlay.name}/secrets.env is not ignored by git"

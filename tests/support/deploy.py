"""What the deployment files must agree with: the queues the app sends to, and the queues each worker role of the
image's entrypoint (deploy/entrypoint.sh) consumes. Used by the compose and Kubernetes tests."""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from pathlib import Path

from celery.exceptions import CDeprecationWarning
from django.conf import settings

from config.celery import app

ROOT = Path(__file__).resolve().parent.parent.parent
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def routed_queues() -> set[str]:
    """Every queue the settings and the tasks send to (Celery's view of the CELERY_* settings)."""
    app.loader.import_default_modules()
    default = app.conf.task_default_queue
    queues = {default, settings.INGEST_QUEUE}
    with warnings.catch_warnings():  # chat's task names its queue with the attribute Celery 6 drops
        warnings.simplefilter("ignore", CDeprecationWarning)
        queues |= {task.queue for task in app.tasks.values() if getattr(task, "queue", None)}
    queues |= {entry.get("options", {}).get("queue", default) for entry in app.conf.beat_schedule.values()}
    return queues


def worker_queues(kind: str, env: dict | None = None) -> set[str]:
    """The queues `deploy/entrypoint.sh worker <kind>` consumes: its own worker_queues function, run here."""
    function = re.search(r"^worker_queues\(\) \{\n.*?^\}\n", ENTRYPOINT.read_text(), re.S | re.M).group(0)
    result = subprocess.run(["sh", "-c", function + 'worker_queues "$1"', "sh", kind], capture_output=True,
                            text=True, env={"PATH": os.environ["PATH"], **(env or {})}, check=True)
    return set(result.stdout.strip().split(","))


def worker_kinds() -> list[str]:
    """The worker roles the entrypoint knows (`deploy/entrypoint.sh queues`)."""
    result = subprocess.run(["sh", str(ENTRYPOINT), "queues"], capture_output=True, text=True, check=True,
                            env={"PATH": os.environ["PATH"]})
    return [line.split(":", 1)[0] for line in result.stdout.splitlines()]

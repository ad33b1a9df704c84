"""FILE_STORAGE_BACKEND picks where uploaded originals live: local files under MEDIA_ROOT (the default; compose
shares one volume between web and workers), or an S3-compatible bucket through django-storages, so web and
workers on different hosts read the same files."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORAGE_VARIABLES = ("FILE_STORAGE_BACKEND", "MEDIA_ROOT", "AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL",
                     "AWS_S3_REGION_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_LOCATION")
DESCRIBE = (
    "import json; from django.core.files.storage import storages; s = storages['default']; "
    "print(json.dumps({'class': type(s).__name__, 'location': str(getattr(s, 'location', '')), "
    "'bucket': getattr(s, 'bucket_name', None), 'overwrite': getattr(s, 'file_overwrite', None), "
    "'url': s.url('tenants/1/a.txt')}))"
)


def default_storage(**variables: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STORAGE_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.base", DEBUG="true", **variables)
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", DESCRIBE], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_uploads_are_local_files_by_default(tmp_path):
    storage = default_storage(MEDIA_ROOT=str(tmp_path))
    assert storage["class"] == "FileSystemStorage" and storage["location"] == str(tmp_path)


def test_s3_setting_switches_uploads_to_the_bucket():
    storage = default_storage(FILE_STORAGE_BACKEND="s3", AWS_STORAGE_BUCKET_NAME="ragdesk-uploads",
                              AWS_S3_ENDPOINT_URL="http://minio.internal:9000", AWS_LOCATION="prod",
                              AWS_ACCESS_KEY_ID="minio", AWS_SECRET_ACCESS_KEY="minio-secret")
    assert storage["class"] == "S3Storage" and storage["bucket"] == "ragdesk-uploads"
    assert storage["url"].startswith("http://minio.internal:9000/ragdesk-uploads/prod/tenants/1/a.txt?")
    assert storage["overwrite"] is False  # like local files: a name in use is never overwritten

"""Orchestrators probe a container by its address (`Host: 10.1.2.3:8000`), which ALLOWED_HOSTS does not list:
/healthz and /readyz answer it anyway, and every other page still refuses the unknown host."""

import pytest
from django.test import override_settings

POD_ADDRESS = "10.1.2.3:8000"


@override_settings(ALLOWED_HOSTS=["ragdesk.example.com"])
def test_liveness_probe_by_container_address(client):
    assert client.get("/healthz", HTTP_HOST=POD_ADDRESS).json() == {"status": "ok"}
    assert client.get("/accounts/login/", HTTP_HOST=POD_ADDRESS).status_code == 400


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=["ragdesk.example.com"])
def test_readiness_probe_by_container_address(client):
    response = client.get("/readyz", HTTP_HOST=POD_ADDRESS)
    assert response.status_code == 200 and response.json()["checks"]["database"] is True

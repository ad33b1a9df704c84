import pytest


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_redis(client):
    body = client.get("/readyz").json()
    assert body["checks"]["database"] is True
    assert body["checks"]["redis"] is True


@pytest.mark.django_db
def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/api-keys" in schema.content
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_unknown_api_route_is_json_404(client):
    response = client.get("/api/v1/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_request_id_is_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"


@pytest.mark.django_db
def test_pages_render_in_korean(client_a):
    client_a.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    body = client_a.get("/accounts/settings/").content.decode()
    assert "설정" in body


def test_no_external_assets_in_templates():
    """On-premise installs have no internet: every script and stylesheet is served by the app."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = [
        str(p.relative_to(root))
        for p in root.glob("**/templates/**/*.html")
        if ".venv" not in p.parts and re.search(r"""(src|href)=["']https?://""", p.read_text())
    ]
    assert offenders == []


def test_asgi_app_refuses_oversize_uploads_before_reading_them():
    import asyncio

    from config.asgi import application

    sent = []

    async def receive():  # a body that must never be read
        raise AssertionError("the body was read")

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/api/v1/knowledge-bases/1/documents", "query_string": b"",
        "headers": [(b"content-length", str(10 * 1024**3).encode()), (b"host", b"testserver")],
    }
    asyncio.run(application(scope, receive, send))
    assert sent[0]["status"] == 413


def test_static_assets_are_served_by_the_app(client):
    response = client.get("/static/vendor/htmx.min.js")
    assert response.status_code == 200
    assert b"htmx" in b"".join(response.streaming_content if response.streaming else [response.content])


@pytest.mark.parametrize("path, kind", [("/static/css/app.css", "text/css"),
                                         ("/static/vendor/htmx.min.js", "javascript")])
def test_the_app_serves_its_own_static_files(client, path, kind):
    """`make run` serves the app with uvicorn alone: without this every page had no stylesheet and no htmx."""
    response = client.get(path)
    assert response.status_code == 200 and kind in response["Content-Type"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/"])
def test_api_docs_pages_load_their_assets_from_this_server(client, path):
    import re

    response = client.get(path)
    body = response.content.decode()
    assert response.status_code == 200 and "static/drf_spectacular_sidecar" in body
    assert not re.search(r"""(src|href)=["']https?://""", body) and "jsdelivr" not in body


@pytest.mark.django_db
def test_favicon_is_served_by_the_app(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")

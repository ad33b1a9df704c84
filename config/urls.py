from django.conf import settings
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

import accounts.schema  # noqa: F401  (registers the API key's OpenAPI security scheme)
from accounts.views import home
from config import errors, health

api_v1 = [
    path("", include("accounts.api_urls")),
    path("", include("billing.api_urls")),
    path("", include("llm.api_urls")),
    path("", include("knowledge.api_urls")),
    path("", include("knowledge.search.api_urls")),
    path("", include("chat.api_urls")),
]

urlpatterns = [
    path("", home, name="home"),
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("accounts/", include("accounts.urls")),
    path("knowledge/search/", include("knowledge.search.urls")),
    path("knowledge/", include("knowledge.urls")),
    path("chat/", include("chat.urls")),
    path("usage/", include("billing.urls")),
    path("llm/", include("llm.urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline scripts.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Unknown API paths answer JSON even under DEBUG, where Django's technical 404 page skips handler404.
    re_path(r"^api/", errors.not_found),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"

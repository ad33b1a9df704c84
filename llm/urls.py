from django.urls import path

from llm import views

app_name = "llm"
urlpatterns = [
    path("status/", views.status, name="status"),
    path("status/check/", views.status_check, name="status-check"),
    path("providers/", views.providers, name="providers"),
    path("providers/<int:provider_id>/delete/", views.provider_delete, name="provider-delete"),
    path("providers/<int:provider_id>/test/", views.provider_test, name="provider-test"),
]

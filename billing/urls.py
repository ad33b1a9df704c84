from django.urls import path

from billing import views

app_name = "billing"
urlpatterns = [
    path("", views.usage_page, name="usage"),
    path("export.csv", views.usage_export, name="export"),
    path("statement/", views.statement, name="statement"),
    path("statement.csv", views.statement_csv, name="statement-csv"),
    path("limits/", views.limits, name="limits"),
]

from django.urls import path

from knowledge import views

app_name = "knowledge"
urlpatterns = [
    path("", views.kb_list, name="kb-list"),
    path("new/", views.kb_create, name="kb-create"),
    path("<int:kb_id>/", views.kb_detail, name="kb-detail"),
    path("<int:kb_id>/documents/", views.kb_documents, name="kb-documents"),
    path("<int:kb_id>/edit/", views.kb_edit, name="kb-edit"),
    path("<int:kb_id>/delete/", views.kb_delete, name="kb-delete"),
    path("<int:kb_id>/reindex/", views.kb_reindex, name="kb-reindex"),
    path("<int:kb_id>/upload/", views.kb_upload, name="kb-upload"),
    path("documents/<int:document_id>/", views.document_detail, name="document-detail"),
    path("documents/<int:document_id>/retry/", views.document_retry, name="document-retry"),
    path("documents/<int:document_id>/reindex/", views.document_reindex, name="document-reindex"),
    path("documents/<int:document_id>/delete/", views.document_delete, name="document-delete"),
]

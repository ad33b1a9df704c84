from django.urls import path

from knowledge.search import views

app_name = "search"

urlpatterns = [
    path("<int:kb_id>/", views.retrieval_test, name="test"),
    path("<int:kb_id>/settings/", views.retrieval_settings, name="settings"),
    path("<int:kb_id>/evaluation/", views.evaluation_home, name="evaluation"),
    path("<int:kb_id>/evaluation/questions/", views.evaluation_question_add, name="evaluation-question-add"),
    path("<int:kb_id>/evaluation/upload/", views.evaluation_upload, name="evaluation-upload"),
    path("<int:kb_id>/evaluation/run/", views.evaluation_run, name="evaluation-run"),
    path("<int:kb_id>/evaluation/runs/", views.evaluation_runs, name="evaluation-runs"),
    path("questions/<int:eval_question_id>/delete/", views.evaluation_question_delete, name="evaluation-question-delete"),
    path("runs/<int:eval_run_id>/", views.evaluation_run_detail, name="evaluation-run-detail"),
]

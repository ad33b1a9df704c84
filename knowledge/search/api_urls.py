from django.urls import path

from knowledge.search import api, evaluation_api

urlpatterns = [
    path("knowledge-bases/<int:kb_id>/search", api.KnowledgeBaseSearch.as_view(), name="api-kb-search"),
    path("search", api.MultiSearch.as_view(), name="api-search"),
    path("knowledge-bases/<int:kb_id>/eval-questions", evaluation_api.KnowledgeBaseEvalQuestions.as_view(),
         name="api-kb-eval-questions"),
    path("knowledge-bases/<int:kb_id>/eval-questions/upload", evaluation_api.KnowledgeBaseEvalQuestionsUpload.as_view(),
         name="api-kb-eval-questions-upload"),
    path("eval-questions/<int:eval_question_id>", evaluation_api.EvalQuestionDetail.as_view(),
         name="api-eval-question-detail"),
    path("knowledge-bases/<int:kb_id>/eval-runs", evaluation_api.KnowledgeBaseEvalRuns.as_view(),
         name="api-kb-eval-runs"),
    path("eval-runs/<int:eval_run_id>", evaluation_api.EvalRunDetail.as_view(), name="api-eval-run-detail"),
]

from django.apps import AppConfig

from config import jobs


class SearchConfig(AppConfig):
    """Retrieval over knowledge bases: analysers, the BM25 inverted index, dense search, fusion, evaluation.
    Its own app (label "search") so its tables and migrations stay apart from ingestion's."""

    name = "knowledge.search"
    label = "search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, not at the top: Django loads apps.py before any model, and this imports models.
        from knowledge.search.evaluation.runs import EVAL_RUN_JOB

        jobs.register(EVAL_RUN_JOB)

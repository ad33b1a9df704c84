from django.apps import AppConfig


class SearchConfig(AppConfig):
    """Retrieval over knowledge bases: analysers, the BM25 inverted index, dense search, fusion, evaluation.
    Its own app (label "search") so its tables and migrations stay apart from ingestion's."""

    name = "knowledge.search"
    label = "search"
    default_auto_field = "django.db.models.BigAutoField"

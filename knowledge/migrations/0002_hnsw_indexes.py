from django.db import migrations

from knowledge.models import INDEXED_DIMENSIONS


def _create(dim: int) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS chunk_embedding_hnsw_{dim} ON knowledge_chunk "
        f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
        f"WHERE embedding_dim = {dim}"
    )


class Migration(migrations.Migration):
    """One partial HNSW expression index per embedding dimension (pgvector's documented pattern), so one
    chunk table serves every embedding model. Queries must repeat the cast and the predicate."""

    dependencies = [("knowledge", "0001_initial"), ("accounts", "0002_extensions")]
    operations = [
        migrations.RunSQL(_create(dim), f"DROP INDEX IF EXISTS chunk_embedding_hnsw_{dim}")
        for dim in INDEXED_DIMENSIONS
    ]

"""Retrieval evaluation: a KB's own test questions (the product feature) and BEIR-style benchmark folders
(the evaluate_retrieval command, bench/retrieval_quality.py, chat.answer_eval).

    files      a question file (JSONL or CSV) parsed into questions
    services   writes: test questions, starting a run (and the synchronous path)
    runs       a worker's run: claim, score, progress, done or failed (a job of config.jobs)
    selectors  reads: questions and runs
    scoring    a search collapsed to a document ranking, and its metrics
    datasets   BEIR folders loaded into a scratch tenant and scored per search mode

Metrics are computed on documents: a ranking of chunks collapses to the ranking of their documents (a
document ranks where its best chunk ranks).
"""

"""A Django-style web tier's Celery app, as the teams Quern is for already run it: the tests enqueue through it
exactly as their views do (``ingest_document.delay(...)``), changing nothing but a Celery route."""

"""annocloud services: ingestion, tasks, annotations, qa, export and the REST gateway."""

"""Ingestion: datasets, items, uploads, manifests, exact and near-duplicate detection."""

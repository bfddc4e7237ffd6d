"""Annotations service: human annotations with revision history, and model predictions."""

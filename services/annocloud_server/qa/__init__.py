"""QA service: consensus over redundant annotations, human review, accepted labels."""

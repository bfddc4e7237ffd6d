"""Model-assisted labeling: classification heads on embeddings and active-learning sampling."""

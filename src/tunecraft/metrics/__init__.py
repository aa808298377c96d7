"""Metrics: a leaf below the tasks (their `evaluate` scores with these) and the evaluate layer. `labels`: scores
of predicted labels (per class, per entity); `text`: scores of generated text (exact match, ROUGE-L)."""

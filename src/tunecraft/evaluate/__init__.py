"""Evaluation: metrics, reports (markdown, HTML, PNG plots), evaluating and predicting with a run."""

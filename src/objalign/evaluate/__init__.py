"""Evaluation: metrics, protocols (held-out images / categories), similarity measures, statistics."""

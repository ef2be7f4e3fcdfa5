"""Experiment tracking: loggers (W&B with an offline fallback) and provenance."""

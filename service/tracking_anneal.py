"""MLflow logging of a strategy-``anneal`` job (the family's own layout of runs, metrics and plots)."""

from __future__ import annotations

from service.tracking import MlflowReporter


class AnnealMlflowReporter(MlflowReporter):
    """Logs a ``anneal`` job to MLflow (for now exactly as :class:`MlflowReporter` does)."""

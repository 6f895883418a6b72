"""MLflow logging of a strategy-``neat`` job (the family's own layout of runs, metrics and plots)."""

from __future__ import annotations

from service.tracking import MlflowReporter


class NeatMlflowReporter(MlflowReporter):
    """Logs a ``neat`` job to MLflow (for now exactly as :class:`MlflowReporter` does)."""

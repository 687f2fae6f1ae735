"""Continual learning: plans of stages, the runner, typed results, metrics, report, plots."""

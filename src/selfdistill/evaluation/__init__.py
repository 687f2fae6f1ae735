"""Evaluation: tasks and their scorers, evaluate, the ICL-gap probe."""

"""Evaluation metrics as pure functions, grouped by task."""

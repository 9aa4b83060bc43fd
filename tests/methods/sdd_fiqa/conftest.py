"""Fixtures of the SDD-FIQA tests (defined in sdd_fiqa_helpers.py, importable by the test modules)."""

from sdd_fiqa_helpers import folder, mean_std_script  # noqa: F401

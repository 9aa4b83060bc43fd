"""HTML report of runs."""

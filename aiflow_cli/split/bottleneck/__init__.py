"""Learned information bottleneck at a cut, its baselines, and early exits (issue #4)."""

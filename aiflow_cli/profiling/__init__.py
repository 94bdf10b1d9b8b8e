"""Measure a segmented model on this machine and project it onto other hardware."""

"""Model sources: turn a ``--model`` value into a :class:`SegmentedModel`."""

from aiflow_cli.models.segmented import Segment, SegmentedModel
from aiflow_cli.models.sources import load_model

__all__ = ["Segment", "SegmentedModel", "load_model"]

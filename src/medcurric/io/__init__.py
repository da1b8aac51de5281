"""Readers for detections, volumes and masks, and the records they return."""

from medcurric.io.records import LabelMap, LesionRecord

__all__ = ["LabelMap", "LesionRecord"]

"""Optional organ segmentation backends (``pip install 'medcurric[seg]'``).

Only :class:`TotalSegmentatorSegmenter` lives here; it needs TotalSegmentator and
its weights on disk. Everything else in medcurric reads segmentations from files
or arrays and never imports this package.
"""

from medcurric.segment.totalsegmentator import (
    TotalSegmentatorSegmenter,
    totalsegmentator_weights_dir,
)

__all__ = ["TotalSegmentatorSegmenter", "totalsegmentator_weights_dir"]

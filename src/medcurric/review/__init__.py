"""Look at the data before training on it: an HTML review report and a segmentation-error audit."""

from medcurric.review.report import (
    ReviewReport,
    load_samples,
    load_seeds,
    review_sample_ids,
    write_review,
)

__all__ = ["ReviewReport", "load_samples", "load_seeds", "review_sample_ids", "write_review"]

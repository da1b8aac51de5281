"""Look at the data before training on it: an HTML review report and a segmentation-error audit."""

from medcurric.review.audit import (
    DEFAULT_PERTURBATIONS,
    AuditResult,
    AuditRow,
    Perturbation,
    PerturbationKind,
    audit_matching,
    format_audit,
    perturb_labels,
)
from medcurric.review.demo_page import write_demo_page
from medcurric.review.masks import label_slice_masks
from medcurric.review.report import (
    ReviewReport,
    load_samples,
    load_seeds,
    review_sample_ids,
    write_review,
)

__all__ = [
    "AuditResult",
    "AuditRow",
    "DEFAULT_PERTURBATIONS",
    "Perturbation",
    "PerturbationKind",
    "ReviewReport",
    "audit_matching",
    "format_audit",
    "label_slice_masks",
    "load_samples",
    "load_seeds",
    "perturb_labels",
    "review_sample_ids",
    "write_demo_page",
    "write_review",
]

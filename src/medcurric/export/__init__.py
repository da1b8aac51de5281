"""Data out for other trainers: accepted samples per stage as LLaVA / ShareGPT JSON, Parquet, ``datasets``.

:func:`export_rows` renders samples for a stage with :func:`medcurric.curriculum.render`
(the Easy overlay drawn, the box cited, the stage's target) into :class:`ExportRow`
records; :func:`to_llava_json`, :func:`to_sharegpt_json`, :func:`to_parquet` and
:func:`to_hf_dataset` write them; :func:`export_samples` does all of it for a samples
file; ``medcurric export`` is the command line. Parquet needs pyarrow and ``datasets``
needs datasets: ``pip install 'medcurric[export]'``.
"""

from medcurric.export.formats import (
    llamafactory_dataset_info,
    to_hf_dataset,
    to_llava_json,
    to_parquet,
    to_sharegpt_json,
)
from medcurric.export.pipeline import ExportFormat, ExportSummary, export_samples
from medcurric.export.rows import ExportRow, ImageMode, export_rows, image_path, read_samples

__all__ = [
    "ExportFormat",
    "ExportRow",
    "ExportSummary",
    "ImageMode",
    "export_rows",
    "export_samples",
    "image_path",
    "llamafactory_dataset_info",
    "read_samples",
    "to_hf_dataset",
    "to_llava_json",
    "to_parquet",
    "to_sharegpt_json",
]

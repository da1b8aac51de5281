"""One exception family for the whole library.

Every error raised on purpose by medcurric derives from :class:`MedcurricError`.
Each subclass also derives from the matching built-in exception, so callers can
catch ``ValueError``/``TypeError``/``FileNotFoundError``/``ImportError`` as usual
or catch everything from the library with ``except MedcurricError``.

Examples:
    >>> from medcurric.errors import InvalidBoxError, MedcurricError
    >>> issubclass(InvalidBoxError, ValueError) and issubclass(InvalidBoxError, MedcurricError)
    True
"""

from __future__ import annotations

__all__ = [
    "ClusterUnreachableError",
    "DataFormatError",
    "InvalidBoxError",
    "InvalidOptionError",
    "MedcurricError",
    "MedcurricWarning",
    "MissingDependencyError",
    "MissingFileError",
    "NonFiniteError",
    "OutputInUseError",
    "ParseError",
    "ShapeError",
    "TemplateError",
    "UnsafePathError",
    "UnsupportedModelError",
    "UnwritableOutputError",
    "WrongTypeError",
]


class MedcurricError(Exception):
    """Base class of every error medcurric raises on purpose."""


class ShapeError(MedcurricError, ValueError):
    """An array or tensor has the wrong shape or number of dimensions."""


class InvalidBoxError(MedcurricError, ValueError):
    """Boxes are malformed: NaN/inf, inverted corners, or outside the image."""


class InvalidOptionError(MedcurricError, ValueError):
    """A string option is not one of the accepted values."""


class DataFormatError(MedcurricError, ValueError):
    """An input file or record does not follow the expected format."""


class ParseError(MedcurricError, ValueError):
    """A model reply could not be parsed into a question, rationale and answer."""


class TemplateError(DataFormatError):
    """A text template is malformed (``{a.b}``, ``{a!r}``, a lone brace) or names a field with no value."""


class UnsafePathError(MedcurricError, ValueError):
    """A path taken from untrusted data points outside the allowed root."""


class WrongTypeError(MedcurricError, TypeError):
    """An argument has an unsupported type."""


class UnsupportedModelError(MedcurricError, TypeError):
    """A model architecture is not supported by a component."""


class MissingFileError(MedcurricError, FileNotFoundError):
    """A required file does not exist."""


class MissingDependencyError(MedcurricError, ImportError):
    """An optional dependency is needed but not installed."""


class NonFiniteError(MedcurricError, ValueError):
    """A monitored value (a loss, a metric) is NaN or infinite where a finite one is needed."""


class OutputInUseError(MedcurricError, RuntimeError):
    """An output file is being written by another process (two writers would duplicate records)."""


class UnwritableOutputError(MedcurricError, PermissionError):
    """An output path cannot be written (a read-only place, a parent path that is a file)."""


class ClusterUnreachableError(MedcurricError, ConnectionError):
    """A compute cluster (Ray) cannot be reached or started at the address given."""


class MedcurricWarning(UserWarning):
    """Base class of warnings medcurric emits (for example, an ignored option)."""

"""String options as enums, with "did you mean ...?" errors."""

from __future__ import annotations

import difflib
import enum
import warnings
from typing import Any, TypeVar

from medcurric.errors import InvalidOptionError, MedcurricWarning

__all__ = ["StrEnum", "look_up_option", "warn_ignored"]


class StrEnum(str, enum.Enum):
    """A string enum whose members compare equal to their values (Python 3.10 compatible)."""

    def __str__(self) -> str:
        return str(self.value)


E = TypeVar("E", bound=StrEnum)


def look_up_option(value: Any, options: type[E], *, name: str = "option") -> E:
    """Convert ``value`` to a member of ``options`` or raise a helpful error.

    Args:
        value: A member of ``options`` or its string value (case-insensitive).
        options: The enum class of accepted values.
        name: The argument name, used in the error message.

    Returns:
        The matching enum member.

    Raises:
        InvalidOptionError: When ``value`` is not an accepted value.

    Examples:
        >>> class Mode(StrEnum):
        ...     MIN = "min"
        ...     MAX = "max"
        >>> look_up_option("MIN", Mode)
        <Mode.MIN: 'min'>
        >>> look_up_option("mni", Mode, name="mode")
        Traceback (most recent call last):
        ...
        medcurric.errors.InvalidOptionError: Expected mode to be one of ['min', 'max'], but got 'mni'. Did you mean 'min'?
    """
    if isinstance(value, options):
        return value
    allowed = [m.value for m in options]
    if isinstance(value, str):
        lowered = value.strip().lower()
        for member in options:
            if member.value.lower() == lowered:
                return member
        close = difflib.get_close_matches(lowered, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    else:
        hint = ""
    raise InvalidOptionError(f"Expected {name} to be one of {allowed}, but got {value!r}.{hint}")


def warn_ignored(option: str, reason: str, *, stacklevel: int = 3) -> None:
    """Warn that an option was given but has no effect.

    Args:
        option: The option's name.
        reason: Why it is ignored.
        stacklevel: Passed to :func:`warnings.warn`.
    """
    warnings.warn(f"Option {option!r} is ignored: {reason}", MedcurricWarning, stacklevel=stacklevel)

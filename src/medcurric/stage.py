"""The three curriculum stages."""

from __future__ import annotations

from medcurric._options import StrEnum

__all__ = ["Stage"]


class Stage(StrEnum):
    """Curriculum stage of a training sample.

    * ``EASY``: the lesion box is drawn on the image and the rationale cites it.
    * ``MEDIUM``: clean image; the rationale is supervised and attention is
      regularised toward the (hidden) box.
    * ``HARD``: clean image; the answer only.

    Examples:
        >>> Stage("medium") is Stage.MEDIUM, Stage.EASY < Stage.HARD
        (True, True)
    """

    EASY = "easy"
    MEDIUM = "medium"
    HARD = "hard"

    @property
    def order(self) -> int:
        """0 for Easy, 1 for Medium, 2 for Hard."""
        return _ORDER[self.value]

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Stage):
            return self.order < other.order
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, Stage):
            return self.order <= other.order
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, Stage):
            return self.order > other.order
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, Stage):
            return self.order >= other.order
        return NotImplemented


_ORDER = {"easy": 0, "medium": 1, "hard": 2}

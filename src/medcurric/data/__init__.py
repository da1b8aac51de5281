"""Bundled data: a deterministic synthetic CT phantom with organ labels and lesions.

:func:`make_phantom` builds, in a few milliseconds, a torso CT volume (HU) with
TotalSegmentator v2 labels, its spacing and affine, and lesion records whose host
organ is known by design. Tests, examples and ``medcurric demo`` use it.
"""

from medcurric.data.phantom import ExpectedHost, Phantom, make_phantom

__all__ = ["ExpectedHost", "Phantom", "make_phantom"]

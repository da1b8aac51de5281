"""Anatomy: which organ a lesion box lies in, and the names of the organs.

* :class:`ClassMap`: label ids <-> organ names, groups, laterality, synonyms;
  :meth:`ClassMap.totalsegmentator` ships the 117-class TotalSegmentator v2 map.
* :class:`BoxOrganMatcher`: exact voxel overlap of boxes with every organ,
  giving an :class:`OrganMatch` per box (``inside`` / ``adjacent`` / ``unmatched``).
"""

from medcurric.anatomy.location import Location, describe_location
from medcurric.anatomy.matcher import (
    BoxOrganMatcher,
    Candidate,
    Criterion,
    MatchLevel,
    MatchOutcome,
    OrganMatch,
)
from medcurric.vocabulary.classmap import ClassMap, Laterality

__all__ = [
    "BoxOrganMatcher",
    "Candidate",
    "ClassMap",
    "Criterion",
    "Laterality",
    "Location",
    "MatchLevel",
    "MatchOutcome",
    "OrganMatch",
    "describe_location",
]

"""The label vocabulary: organ label ids, names, groups, sides and synonyms.

:class:`ClassMap` sits below the readers and the matcher, so both can use it;
:meth:`ClassMap.totalsegmentator` ships the 117-class TotalSegmentator v2 map.
"""

from medcurric.vocabulary.classmap import ClassMap, Laterality

__all__ = ["ClassMap", "Laterality"]

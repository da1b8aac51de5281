"""Factual seeds: the (lesion, location, organ) triplet and the sentence stating it.

:class:`SeedBuilder` turns a :class:`~medcurric.io.LesionRecord`, its
:class:`~medcurric.anatomy.OrganMatch` and :class:`~medcurric.anatomy.Location`
into a :class:`FactualSeed` ("There is a 14 mm liver lesion in the right
posterior part of the liver."). :func:`build_seeds` does every lesion of one label
map; :func:`write_seeds` runs over whole datasets (what ``medcurric seeds`` calls).
"""

from medcurric.seeds.builder import SeedBuilder
from medcurric.seeds.pipeline import (
    SeedReject,
    SeedsRun,
    build_seeds,
    outcome_table,
    read_seeds,
    rejects_path,
    seed_case,
    summarise,
    write_seeds,
)
from medcurric.seeds.records import FactualSeed
from medcurric.seeds.templates import (
    DEFAULT_TEMPLATES,
    TEMPLATE_FIELDS,
    SeedTemplates,
    lesion_noun,
    lesion_phrase,
    render_template,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "FactualSeed",
    "SeedBuilder",
    "SeedReject",
    "SeedTemplates",
    "SeedsRun",
    "TEMPLATE_FIELDS",
    "build_seeds",
    "lesion_noun",
    "lesion_phrase",
    "outcome_table",
    "read_seeds",
    "rejects_path",
    "render_template",
    "seed_case",
    "summarise",
    "write_seeds",
]

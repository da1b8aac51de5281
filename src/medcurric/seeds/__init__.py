"""Factual seeds: the (lesion, location, organ) triplet and the sentence stating it.

:class:`SeedBuilder` turns a :class:`~medcurric.io.LesionRecord`, its
:class:`~medcurric.anatomy.OrganMatch` and :class:`~medcurric.anatomy.Location`
into a :class:`FactualSeed` ("There is a 14 mm liver lesion in the right
posterior part of the liver."). ``medcurric seeds`` runs it over whole datasets.
"""

from medcurric.seeds.builder import SeedBuilder, lesion_noun
from medcurric.seeds.pipeline import build_seeds
from medcurric.seeds.records import FactualSeed
from medcurric.seeds.templates import (
    DEFAULT_TEMPLATES,
    TEMPLATE_FIELDS,
    SeedTemplates,
    render_template,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "FactualSeed",
    "SeedBuilder",
    "SeedTemplates",
    "TEMPLATE_FIELDS",
    "build_seeds",
    "lesion_noun",
    "render_template",
]

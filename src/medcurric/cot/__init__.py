"""QA + chain-of-thought generation from factual seeds, with any VLM, at dataset scale.

:class:`CoTGenerator` turns :class:`~medcurric.seeds.records.FactualSeed` records into
stage-specific :class:`CoTSample` records (Easy: the rationale cites the box;
Medium: whole image; Hard: answer only), through a backend
(:class:`TemplateBackend`, :class:`TransformersBackend`, :class:`OpenAIBackend`),
:func:`parse_reply` and :func:`validate_sample`. Samples are written as
append-only, resumable JSON lines; ``medcurric generate`` is the command line.
"""

from medcurric.cot.backends import (
    Backend,
    Completion,
    GenerationRequest,
    OpenAIBackend,
    TemplateBackend,
    TransformersBackend,
    template_reply,
)
from medcurric.cot.generator import CoTGenerator, RunSummary, parse_shard, sample_id, shard_of
from medcurric.cot.parsing import MAX_REPLY_CHARS, ParsedReply, parse_reply
from medcurric.cot.records import CoTSample, Verdict
from medcurric.cot.templates import (
    DEFAULT_SYSTEM_PROMPT,
    TEMPLATE_FIELDS,
    PromptTemplate,
    QuestionType,
    default_templates,
    fill_template,
    read_prompt_templates,
    reply_format,
)
from medcurric.cot.validation import OrganLexicon, OrganVocabulary, cited_boxes, validate_sample

__all__ = [
    "Backend",
    "CoTGenerator",
    "CoTSample",
    "Completion",
    "DEFAULT_SYSTEM_PROMPT",
    "GenerationRequest",
    "MAX_REPLY_CHARS",
    "OpenAIBackend",
    "OrganLexicon",
    "OrganVocabulary",
    "ParsedReply",
    "PromptTemplate",
    "QuestionType",
    "RunSummary",
    "TEMPLATE_FIELDS",
    "TemplateBackend",
    "TransformersBackend",
    "Verdict",
    "cited_boxes",
    "default_templates",
    "fill_template",
    "parse_reply",
    "parse_shard",
    "read_prompt_templates",
    "reply_format",
    "sample_id",
    "shard_of",
    "template_reply",
    "validate_sample",
]

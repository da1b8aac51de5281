"""The Easy -> Medium -> Hard curriculum: when to switch, and what each stage looks like.

* :class:`CurriculumScheduler` decides the stage from monitored losses (the
  paper's plateau rule, or the authors' per-domain mixing policy).
* :func:`render` turns one :class:`~medcurric.cot.records.CoTSample` into the
  model input of a stage (a :class:`RenderedSample`); :class:`CurriculumCollator` batches rendered samples
  through a Hugging Face processor, with span masks and attention targets.
* :func:`plot_history` draws the losses with stage bands and switch points.
"""

from medcurric.curriculum.collate import CurriculumCollator, Supervise, TargetSmoothing
from medcurric.curriculum.plot import plot_history
from medcurric.curriculum.render import (
    EasyPromptBox,
    RenderedSample,
    chat_prompt_template,
    format_box,
    pair_hard_images,
    render,
)
from medcurric.curriculum.scheduler import (
    CurriculumScheduler,
    Decision,
    GapRule,
    Mode,
    NonFinitePolicy,
    Policy,
    Reason,
    ThresholdMode,
)
from medcurric.stage import Stage

__all__ = [
    "CurriculumCollator",
    "CurriculumScheduler",
    "Decision",
    "EasyPromptBox",
    "GapRule",
    "Mode",
    "NonFinitePolicy",
    "Policy",
    "Reason",
    "RenderedSample",
    "Stage",
    "Supervise",
    "TargetSmoothing",
    "ThresholdMode",
    "chat_prompt_template",
    "format_box",
    "pair_hard_images",
    "plot_history",
    "render",
]

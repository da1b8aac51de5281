"""Adapters that plug :class:`~medcurric.curriculum.CurriculumScheduler` into training frameworks.

The adapters live in submodules so that importing one framework never imports
the other:

* :mod:`medcurric.integrations.hf`: ``CurriculumCallback`` for the Hugging Face
  ``Trainer`` (``pip install 'medcurric[vlm]'``);
* :mod:`medcurric.integrations.lightning`: ``CurriculumCallback`` for Lightning
  (``pip install 'medcurric[lightning]'``).

Both only adapt the scheduler: they feed it the configured metric when the
framework reports one, expose the current stage (for a collator or dataset) and
save the scheduler's state in the framework's checkpoints.
"""

__all__: list[str] = []

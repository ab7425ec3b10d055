"""The one data path: read a file, detect and map its layout, normalise to TRL's dataset types, render
with the model's chat template and tokenize. ``ftplan profile``, ``plan``, the wizard and the executor
all go through it (see ``profile.py`` for the planner's pass and ``executor/data.py`` for the run's)."""

from planner.dataset.chat import ChatTemplate, TemplateFixes, TemplateRefusal
from planner.dataset.profile import DataProfile, InvalidRow, profile_data

__all__ = ["ChatTemplate", "DataProfile", "InvalidRow", "TemplateFixes", "TemplateRefusal", "profile_data"]

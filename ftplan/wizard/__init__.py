"""``ftplan wizard``: a Textual terminal wizard from nothing to a reviewed plan (and its run).

The wizard is a thin shell over the planner: every number it shows comes from the same functions
``ftplan plan`` calls (``planner.rules.make_plan``, ``planner.render``...), reached through
:class:`~ftplan.wizard.services.WizardServices` so tests can fake the hardware probe.

Textual is an optional extra (``pip install 'ftplan[wizard]'``): only ``ftplan.wizard.app`` and the
screens import it, and nothing else in ``planner/`` imports them. This ``__init__`` stays free of it.
"""

from ftplan.wizard.services import WizardServices
from ftplan.wizard.state import WizardAnswers

__all__ = ["WizardAnswers", "WizardServices"]

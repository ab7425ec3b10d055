"""The rule engine: turns a PlanRequest (+ model spec, hardware, data profile) into a Plan whose every
value carries its reason and source.

One small module per concern (``advice``, ``strategy``, ``precision``, ``batch``, ``optim``,
``lora``, ``data``, ``evaluation``, ``budget``); ``engine`` orders them and feeds the estimator.

``make_plan(request, *, hardware=None, profile=None, spec=None) -> PlanResult``.
"""

from planner.rules.common import Choice
from planner.rules.engine import (
    Alternative,
    NoFitError,
    Option,
    PlanResult,
    collect_versions,
    make_plan,
)

__all__ = [
    "Alternative",
    "Choice",
    "NoFitError",
    "Option",
    "PlanResult",
    "collect_versions",
    "make_plan",
]

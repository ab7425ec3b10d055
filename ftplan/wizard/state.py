"""The wizard's answers: what the user chose so far, and the PlanRequest they amount to.

The App owns one :class:`WizardAnswers`; each step screen dismisses with a dict of the fields it
answers and the App merges it (``dataclasses.replace``). The request built here is exactly what
``ftplan plan`` builds from the same flags, so both produce the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from planner.request import PlanRequest

if TYPE_CHECKING:
    from planner.dataset.profile import DataProfile
    from planner.hardware import Hardware
    from planner.model_spec import ModelSpec
    from planner.rules.engine import PlanResult

GOALS = ("quality", "balanced", "cost")

# Data format (DataProfile.format) -> the task that format usually means; only the task step's
# initial choice, the user can change it (the planner validates the pair).
TASK_FOR_FORMAT = {
    "alpaca": "sft",
    "prompt_completion": "sft",
    "chat": "chat",
    "text": "continued-pretraining",
    "classification": "classification",
    "preference": "preference",
}

# Answers whose change makes the later strategy/settings choices stale (they were picked for other
# inputs): the App drops those overrides when one of these changes.
UPSTREAM = ("model", "data", "columns", "system_turn", "task", "goal", "max_hours", "max_cost", "gpu", "gpus",
            "price_per_hour")


@dataclass(frozen=True)
class WizardAnswers:
    """Everything the user answered, plus the planner objects those answers were validated into."""

    model: str = ""
    spec: ModelSpec | None = None  # of ``model`` (from services.load_model_spec)
    data: str = ""
    profile: DataProfile | None = None  # of ``data`` (from services.profile_data)
    columns: dict[str, str] = field(default_factory=dict)  # --columns mapping from the data step
    system_turn: str = "keep"  # --system-turn from the data step (templates without a system role)
    task: str = ""  # "" until the task step: defaults from the data format
    goal: str = "balanced"
    max_hours: float | None = None
    max_cost: float | None = None
    gpu: str | None = None  # catalog name; None = use the detected hardware
    gpus: int | None = None
    price_per_hour: float | None = None
    hardware: Hardware | None = None  # from services.probe or services.resolve_hardware
    strategy: str = ""  # the strategy the user picked; "" = the planner's recommendation
    strategy_overrides: dict[str, str] = field(default_factory=dict)  # from the strategy step
    setting_overrides: dict[str, str] = field(default_factory=dict)  # from the settings step
    out_dir: str = ""
    run_now: bool = False
    result: PlanResult | None = None  # written by the review step

    @property
    def overrides(self) -> dict[str, str]:
        """The ``--set key=value`` pairs these answers amount to (settings win over strategy)."""
        return {**self.strategy_overrides, **self.setting_overrides}

    def default_task(self) -> str:
        if self.task:
            return self.task
        fmt = getattr(self.profile, "format", None)
        return TASK_FOR_FORMAT.get(fmt, "sft")

    def request(self) -> PlanRequest:
        """The PlanRequest `ftplan plan` would build from the same flags."""
        return PlanRequest(
            model=self.model,
            data=self.data,
            task=self.default_task(),
            goal=self.goal,  # type: ignore[arg-type]
            gpu=self.gpu,
            gpus=self.gpus,
            price_per_hour=self.price_per_hour,
            max_hours=self.max_hours,
            max_cost=self.max_cost,
            overrides=self.overrides,
            columns=dict(self.columns),
            system_turn=self.system_turn,
        )

    def profile_options(self, task: str | None) -> dict[str, Any]:
        """The profile_data keywords `ftplan plan` uses for these answers (planner.rules.engine)."""
        from planner.dataset.chat import TemplateFixes

        spec = self.spec
        return {
            "tokenizer_path": getattr(spec, "tokenizer_path", None),
            "task": task or None,
            "vocab_size": getattr(spec, "vocab_size", None),
            "model_type": getattr(spec, "model_type", None),
            "columns": dict(self.columns),
            "fixes": TemplateFixes(self.system_turn),
        }

    def merged(self, changes: dict[str, Any]) -> WizardAnswers:
        """These answers with one step's answer merged in; stale later choices dropped."""
        stale = any(k in UPSTREAM and changes[k] != getattr(self, k) for k in changes)
        new = replace(self, **changes)
        if stale and "strategy_overrides" not in changes:
            new = replace(new, strategy="", strategy_overrides={}, setting_overrides={})
        return new

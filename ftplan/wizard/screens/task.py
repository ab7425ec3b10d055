"""Step 3: task type, goal, optional budget; the planner's fine-tune vs prompting/RAG advice."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, RadioButton, RadioSet, Select, Static
from textual.worker import get_current_worker

from ftplan.wizard.screens.base import StepFailed, StepScreen
from ftplan.wizard.state import GOALS
from planner.vocab import TASKS

TASK_HELP = {
    "sft": "instruction tuning: prompt → response (alpaca, prompt/completion)",
    "chat": "multi-turn conversations with the chat template",
    "continued-pretraining": "raw text: more domain knowledge",
    "classification": "text → label",
    "preference": "DPO on prompt / chosen / rejected",
}
GOAL_HELP = {
    "quality": "best model the hardware allows",
    "balanced": "good model, sensible time",
    "cost": "cheapest plan that does the job",
}


def parse_budget(text: str, name: str) -> float | None:
    """'' -> None; a positive finite number, else ValueError with the field's name."""
    text = text.strip().lstrip("$")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: '{text}' is not a number (leave empty for no limit)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be a positive number, got {text} (leave empty for no limit)")
    return value


class TaskScreen(StepScreen):
    STEP = 3
    TITLE = "Task and goal"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._profiles: dict[str, Any] = {}  # task -> DataProfile

    def compose_body(self) -> ComposeResult:
        a = self.answers
        yield Label("Task")
        yield Select([(f"{t}  ({TASK_HELP[t]})", t) for t in TASKS], value=a.default_task(),
                     allow_blank=False, id="task", compact=True)
        yield Label("Goal")
        with RadioSet(id="goal", compact=True):
            for g in GOALS:
                yield RadioButton(f"{g}: {GOAL_HELP[g]}", value=g == a.goal, name=g)
        yield Label("Budget (optional)")
        with Horizontal(classes="row"):
            yield Label("max hours ", classes="field-label")
            yield Input(_fmt(a.max_hours), placeholder="none", id="max-hours", compact=True)
            yield Label(" max cost $ ", classes="field-label")
            yield Input(_fmt(a.max_cost), placeholder="none", id="max-cost", compact=True)
        yield Static("", id="advice")

    def on_mount(self) -> None:
        self.query_one("#task", Select).focus()
        self._advise()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.show_error(None)
        self._advise()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.show_error(None)
        self._advise()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.show_error(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    # -- the planner's view of these answers ----------------------------------------------------
    def _pending(self) -> dict[str, Any]:
        goal_set = self.query_one("#goal", RadioSet)
        goal = goal_set.pressed_button.name if goal_set.pressed_button else self.answers.goal
        return {
            "task": str(self.query_one("#task", Select).value),
            "goal": goal,
            "max_hours": parse_budget(self.query_one("#max-hours", Input).value, "max hours"),
            "max_cost": parse_budget(self.query_one("#max-cost", Input).value, "max cost"),
        }

    def _profile_for(self, task: str):
        """The data profile as `ftplan plan` reads it: with the task (it can break format ties)."""
        if task not in self._profiles:
            self._profiles[task] = self.call(self.services.profile_data, self.answers.data,
                                             **self.answers.profile_options(task))
        return self._profiles[task]

    def _answers_for_planning(self, pending: dict[str, Any]):
        hardware = self.answers.hardware or self.app.detected_hardware()
        profile = self._profile_for(pending["task"])
        return replace(self.answers, hardware=hardware, profile=profile, **pending)

    def _advise(self) -> None:
        try:
            pending = self._pending()
        except ValueError:
            pending = {"task": str(self.query_one("#task", Select).value)}
        self.query_one("#advice", Static).update("asking the planner…")
        self._plan_in_thread(pending)

    @work(thread=True, exclusive=True, group="task-advice")
    def _plan_in_thread(self, pending: dict[str, Any]) -> None:
        try:
            result, error = self.plan_result(self._answers_for_planning(pending)), None
        except StepFailed as exc:
            result, error = None, str(exc)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_advice, result, error)

    def _show_advice(self, result, error: str | None) -> None:
        self.query_one("#advice", Static).update(describe_advice(result) if result is not None else "")
        if error:
            self.show_error(error)

    def validate(self) -> str | None:
        try:
            pending = self._pending()
        except ValueError as exc:
            return str(exc)
        try:
            self.plan_result(self._answers_for_planning(pending))
        except StepFailed as exc:
            return str(exc)
        return None

    def answer(self) -> dict[str, Any]:
        pending = self._pending()
        return {**pending, "profile": self._profile_for(pending["task"])}



def describe_advice(result) -> Text:
    """The planner's fine-tune vs prompting/RAG advice (PlanResult.advice: rules/advice.py)."""
    t = Text()
    for item in getattr(result, "advice", None) or []:
        verdict = getattr(item, "verdict", "")
        ok = verdict == "fine-tune"
        t.append("✓ fine-tune: " if ok else f"⚠ consider {verdict}: ", style="bold green" if ok else "bold yellow")
        t.append(f"{getattr(item, 'message', item)}\n")
    return t


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:g}"

"""Step 6: the decided hyperparameters, editable, each with its reason; memory/time/cost live."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from ftplan.wizard.screens.base import StepFailed, StepScreen
from ftplan.wizard.screens.strategies import capacity
from ftplan.wizard.widgets import gib, hours, memory_bar, money, verdict_text

SCALARS = (bool, int, float, str, type(None))
NOT_EDITABLE = ("estimate",)  # results of the other choices, not choices (e.g. the budget decision)


def value_text(value: Any) -> str:
    """A decided value as the user would type it after --set (YAML scalars)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def editable_decisions(plan) -> list:
    """Decisions whose value is a scalar or a list of scalars (what --set can express), in plan order."""
    seen: set[str] = set()
    out = []
    for d in getattr(plan, "decisions", []) or []:
        if d.field.split(".")[0] in NOT_EDITABLE:
            continue
        simple = isinstance(d.value, SCALARS) or (
            isinstance(d.value, (list, tuple)) and all(isinstance(v, SCALARS) for v in d.value))
        if simple and d.field not in seen:
            seen.add(d.field)
            out.append(d)
    return out


def live_summary(result, hardware) -> Text:
    """The plan's own estimate: method, memory per GPU against the GPU, verdict, time, cost."""
    plan = result.plan
    est = plan.estimate
    cap = capacity(hardware)
    t = Text()
    t.append(f"{plan.strategy.method}", style="bold")
    if plan.strategy.distribution != "single":
        t.append(f" + {plan.strategy.distribution}", style="bold")
    t.append(f" · {gib(est.total)} / {gib(cap) if cap else '?'} per GPU · ")
    t.append_text(verdict_text(est.verdict or "?"))
    t.append(f" · {hours(est.time_hours)} · {money(est.cost_usd)} · {est.steps:,} steps\n")
    t.append_text(memory_bar(est, cap, 60))
    return t


def warnings_text(result) -> Text:
    t = Text()
    for w in getattr(result.plan, "warnings", []) or []:
        t.append("⚠ ", style="bold yellow")
        t.append(f"{w}\n")
    return t


class SettingsScreen(StepScreen):
    STEP = 6
    TITLE = "Settings"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.edits: dict[str, str] = dict(self.answers.setting_overrides)
        self.result = None
        self.error: str | None = None
        try:
            self.result = self.plan_result()
        except StepFailed as exc:
            self.error = str(exc)
        self.decisions = editable_decisions(self.result.plan) if self.result is not None else []
        self.initial = {d.field: value_text(d.value) for d in self.decisions}
        self._shown = dict(self.initial)  # the text each Input holds now

    def compose_pinned(self) -> ComposeResult:
        yield Static(live_summary(self.result, self.answers.hardware) if self.result else "", id="live")
        with VerticalScroll(id="warnings-box"):
            yield Static(warnings_text(self.result) if self.result else "", id="warnings")

    def compose_body(self) -> ComposeResult:
        for i, d in enumerate(self.decisions):
            with Horizontal(classes="setting"):
                yield Label(d.field, classes="setting-name")
                yield Input(self.initial[d.field], id=f"f{i}", compact=True, classes="setting-value")
            yield Static(Text(str(d.reason), style="dim"), classes="reason")

    def on_mount(self) -> None:
        self._show_warnings(self.result)
        if self.error:
            self.show_error(self.error)
        if self.decisions:
            self.query_one("#f0", Input).focus()

    def _field_of(self, widget_id: str | None) -> str | None:
        if widget_id and widget_id.startswith("f") and widget_id[1:].isdigit():
            return self.decisions[int(widget_id[1:])].field
        return None

    def on_input_changed(self, event: Input.Changed) -> None:
        name = self._field_of(event.input.id)
        text = event.value.strip()
        if name is None or text == self._shown.get(name):
            return  # not a setting, or the Changed an Input posts for its initial value
        self._shown[name] = text
        if text == self.initial[name] and name not in self.answers.setting_overrides:
            self.edits.pop(name, None)
        else:
            self.edits[name] = text
        self.set_status("updating…")
        self.debounce("settings", self._replan)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def _replan(self) -> None:
        self._plan_in_thread(replace(self.answers, setting_overrides=dict(self.edits)))

    @work(thread=True, exclusive=True, group="settings-replan")
    def _plan_in_thread(self, answers) -> None:
        try:
            result, error = self.plan_result(answers), None
        except StepFailed as exc:
            result, error = None, str(exc)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, result, error)

    def _show(self, result, error: str | None) -> None:
        self.set_status("")
        self.show_error(error)
        if result is not None:
            self.query_one("#live", Static).update(live_summary(result, self.answers.hardware))
            self._show_warnings(result)

    def _show_warnings(self, result) -> None:
        text = warnings_text(result) if result is not None else Text()
        self.query_one("#warnings", Static).update(text)
        self.query_one("#warnings-box").display = bool(text.plain)

    def validate(self) -> str | None:
        if self.result is None:
            return self.error
        try:
            result = self.plan_result(replace(self.answers, setting_overrides=dict(self.edits)))
        except StepFailed as exc:
            return str(exc)
        self._show(result, None)
        return None

    def answer(self) -> dict[str, Any]:
        return {"setting_overrides": dict(self.edits)}

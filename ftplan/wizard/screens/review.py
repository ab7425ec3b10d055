"""Step 7: plan.yaml and REPORT.md exactly as they will be written; write the folder (and run)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, Checkbox, Input, Label, TabbedContent, TabPane, TextArea

from ftplan.wizard.screens.base import StepFailed, StepScreen


def default_out_dir(model: str) -> str:
    """plans/<last part of the model id>, safe as a folder name."""
    tail = model.rstrip("/").split("/")[-1] or "model"
    return "plans/" + (re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.") or "model")


class ReviewScreen(StepScreen):
    STEP = 7
    TITLE = "Review"
    NEXT_LABEL = "Write plan ▶"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+r", "write_and_run", "Write and run")]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.result = None
        self.error: str | None = None
        self.yaml_text = self.report_text = ""
        try:
            self.result = self.plan_result(full=True)
            self.yaml_text = self.call(self.services.render_plan_yaml, self.result.plan)
            self.report_text = self.call(self.services.render_report, self.result)
        except StepFailed as exc:
            self.error = str(exc)

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("plan folder ", classes="field-label")
            yield Input(self.answers.out_dir or default_out_dir(self.answers.model), id="out", compact=True)
            yield Button("Write and run", id="write-run", compact=True)
        yield Checkbox("replace the plan files if the folder already has a plan (keeps output/)", id="force",
                       compact=True)
        with TabbedContent(id="files"):
            with TabPane("plan.yaml", id="tab-yaml"):
                yield TextArea(self.yaml_text, read_only=True, id="yaml", soft_wrap=False)
            with TabPane("REPORT.md", id="tab-report"):
                yield TextArea(self.report_text, read_only=True, id="report", soft_wrap=True)

    def on_mount(self) -> None:
        if self.error:
            self.show_error(self.error)
        self.query_one("#out", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.show_error(self.error)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "write-run":
            event.stop()
            self.action_write_and_run()
            return
        super().on_button_pressed(event)

    def action_write_and_run(self) -> None:
        self._write(run_now=True)

    def action_next(self) -> None:
        self._write(run_now=False)

    def _write(self, *, run_now: bool) -> None:
        """Writes the folder with the planner's own writer; any failure stays on this screen."""
        if self.result is None:
            self.show_error(self.error or "nothing to write")
            return
        out = self.query_one("#out", Input).value.strip()
        if not out:
            self.show_error("enter the folder to write the plan into")
            return
        try:
            force = self.query_one("#force", Checkbox).value
            self.call(self.services.write_plan_folder, self.result, out, force=force)
        except StepFailed as exc:
            self.show_error(str(exc))
            return
        self.dismiss({"out_dir": out, "run_now": run_now, "result": self.result})

    def answer(self) -> dict[str, Any]:  # pragma: no cover - _write dismisses directly
        return {}

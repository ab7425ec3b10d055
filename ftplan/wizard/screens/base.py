"""The frame every step shares: title, scrollable body, inline error line, Back/Next, key help.

A step screen dismisses with its answer (a dict of :class:`~ftplan.wizard.state.WizardAnswers`
fields) on Next, or with :data:`BACK`. Next first runs ``validate()``: a problem is shown on the
error line and the screen stays. Planner calls go through :meth:`StepScreen.call`, which turns any
exception into that inline message, so no input can crash the wizard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Static

from ftplan.wizard.services import WizardServices
from ftplan.wizard.state import WizardAnswers
from planner.errors import FtplanError, first_line

BACK = "__back__"
STEP_COUNT = 8
DEBOUNCE_S = 0.25  # live validation waits for a pause in typing


class StepFailed(Exception):
    """A planner call failed; ``str()`` is the one-line message shown inline."""


def describe_error(exc: BaseException) -> str:
    """One line for the error line: FtplanError's own message, else the type and text."""
    if isinstance(exc, FtplanError):
        return str(exc)
    return first_line(exc, with_type=True)


class StepScreen(Screen):
    """Base of the eight steps; subclasses define STEP, TITLE, compose_body, validate and answer."""

    STEP: ClassVar[int] = 0
    TITLE: ClassVar[str] = ""
    NEXT_LABEL: ClassVar[str] = "Next ▶"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "next", "Next"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, answers: WizardAnswers, services: WizardServices) -> None:
        super().__init__()
        self.answers = answers
        self.services = services
        self._debouncers: dict[str, Timer] = {}

    # -- layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(f"ftplan wizard · step {self.STEP}/{STEP_COUNT} · {self.TITLE}", id="title")
        yield from self.compose_pinned()
        with VerticalScroll(id="body"):
            yield from self.compose_body()
        yield Static("", id="error")
        with Horizontal(id="nav"):
            yield Button("◀ Back", id="back", compact=True, disabled=self.STEP == 1)
            yield Static("", id="status")
            yield Button(self.NEXT_LABEL, id="next", variant="primary", compact=True)
        yield Footer()

    def compose_pinned(self) -> ComposeResult:
        """Widgets kept in view above the scrolling body (e.g. the live estimate)."""
        yield from ()

    def compose_body(self) -> ComposeResult:  # pragma: no cover - every step overrides it
        yield from ()

    # -- navigation -----------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            event.stop()
            self.action_next()
        elif event.button.id == "back":
            event.stop()
            self.action_back()

    def action_next(self) -> None:
        try:
            problem = self.validate()
        except Exception as exc:  # noqa: BLE001 - any failure is an inline message, never a crash
            problem = describe_error(exc)
        if problem:
            self.show_error(problem)
            return
        self.dismiss(self.answer())

    def action_back(self) -> None:
        if self.STEP > 1:
            self.dismiss(BACK)

    def validate(self) -> str | None:
        """The problem that blocks Next, or None."""
        return None

    def answer(self) -> dict[str, Any]:
        """The WizardAnswers fields this step sets."""
        return {}

    # -- helpers --------------------------------------------------------------------------------
    def show_error(self, message: str | None) -> None:
        error = self.query_one("#error", Static)
        error.update(Text(f"✗ {message}") if message else "")  # Text: no markup parsing of user input
        error.set_class(bool(message), "visible")

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a planner function; any exception becomes StepFailed with a one-line message."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise StepFailed(describe_error(exc)) from exc

    def debounce(self, key: str, callback: Callable[[], None], delay: float = DEBOUNCE_S) -> None:
        """Run ``callback`` once typing in ``key`` pauses for ``delay`` seconds."""
        old = self._debouncers.pop(key, None)
        if old is not None:
            old.stop()
        self._debouncers[key] = self.set_timer(delay, callback)

    def plan_result(self, answers: WizardAnswers | None = None, *, full: bool = False):
        """``make_plan`` on the answers: the same call `ftplan plan` makes (raises StepFailed).

        Steps that only show estimates skip the search for cheaper/faster hardware elsewhere in the
        GPU catalog (``alternatives=False``: it fills only REPORT.md's alternatives table, ~10x the
        time of the plan itself); the review step, which renders REPORT.md, asks for the full result.
        """
        a = answers or self.answers
        extra = {} if full else {"alternatives": False}
        return self.call(self.services.make_plan, a.request(), hardware=a.hardware, profile=a.profile,
                         spec=a.spec, **extra)

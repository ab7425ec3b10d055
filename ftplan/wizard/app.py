"""The wizard App: owns the answers, shows one step screen at a time, returns the written Plan.

Each step is a Screen pushed with a callback; it dismisses with its answer (or BACK) and the App
merges the answer and pushes the next step. The planner is reached only through ``services``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from ftplan.wizard.screens.base import BACK, describe_error
from ftplan.wizard.screens.data import DataScreen
from ftplan.wizard.screens.hardware import HardwareScreen
from ftplan.wizard.screens.model import ModelScreen
from ftplan.wizard.screens.review import ReviewScreen
from ftplan.wizard.screens.run import RunScreen
from ftplan.wizard.screens.settings import SettingsScreen
from ftplan.wizard.screens.strategies import StrategyScreen
from ftplan.wizard.screens.task import TaskScreen
from ftplan.wizard.services import WizardServices
from ftplan.wizard.state import WizardAnswers
from planner.hardware import Hardware

STEPS = (ModelScreen, DataScreen, TaskScreen, HardwareScreen, StrategyScreen, SettingsScreen, ReviewScreen)


class WizardApp(App[Any]):
    """``ftplan wizard``. ``run()`` returns the written Plan, or None when the user quits."""

    CSS_PATH = "wizard.tcss"
    TITLE = "ftplan wizard"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        services: WizardServices | None = None,
        answers: WizardAnswers | None = None,
        *,
        start_step: int = 1,
    ) -> None:
        super().__init__()
        self.services = services or WizardServices()
        self.answers = answers or WizardAnswers()
        self.start_step = start_step
        self.step = start_step
        self._detected: Any = None

    def detected_hardware(self):
        """The probe's answer, asked once (pynvml); a CPU-only Hardware when there is no GPU."""
        if self._detected is None:
            try:
                self._detected = self.services.probe()
            except Exception as exc:  # noqa: BLE001 - a broken driver means "no GPU seen", not a crash
                self._detected = Hardware(gpu=None, count=0, free_memory_bytes=0, detected=False,
                                          notes=(f"GPU probe failed: {describe_error(exc)}",))
        return self._detected

    def on_mount(self) -> None:
        self.show_step(self.start_step)

    def show_step(self, number: int) -> None:
        """Push step ``number`` (1-based) built from the current answers."""
        self.step = number
        if number == len(STEPS) + 1:
            screen = RunScreen(self.answers, self.services)
        else:
            screen = STEPS[number - 1](self.answers, self.services)
        self.push_screen(screen, callback=self._step_done)

    def _step_done(self, result: Any) -> None:
        if result == BACK:
            self.show_step(max(1, self.step - 1))
            return
        if self.step > len(STEPS):  # the run screen closed
            self.exit(self.answers.result.plan)
            return
        self.answers = self.answers.merged(result or {})
        if self.step < len(STEPS) or self.answers.run_now:
            self.show_step(self.step + 1)
        else:
            self.exit(self.answers.result.plan)

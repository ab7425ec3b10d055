"""Step 4: hardware: the detected GPUs (or none), editable as a catalog GPU type and a count."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Select, Static

from ftplan.wizard.screens.base import StepFailed, StepScreen
from ftplan.wizard.screens.task import parse_budget
from ftplan.wizard.widgets import gib, money

DETECTED = "__detected__"


def describe_hardware(hw, *, prefix: str = "") -> Text:
    t = Text(prefix)
    if hw is None or hw.gpu is None:
        t.append("no GPU", style="bold yellow")
        t.append(" (training would run on the CPU: only tiny models are practical)")
        return t
    t.append(f"{hw.count} x {hw.gpu.name}", style="bold")
    if getattr(hw, "nodes", 1) > 1:
        t.append(f" x {hw.nodes} nodes")
    t.append(f" · {gib(hw.memory_bytes)} each, {gib(hw.free_memory_bytes)} usable · ")
    t.append("bf16" if hw.bf16 else "fp16 only (no bf16)")
    t.append(f" · {money(hw.hourly_price)}/GPU-hour")
    return t


class HardwareScreen(StepScreen):
    STEP = 4
    TITLE = "Hardware"

    def compose_body(self) -> ComposeResult:
        detected = self.app.detected_hardware()
        yield Static(describe_hardware(detected, prefix="Detected: "), id="detected")
        options: list[tuple[str, str]] = []
        if detected is not None and detected.gpu is not None:
            options.append((f"detected ({detected.count} x {detected.gpu.name})", DETECTED))
        try:
            names = list(self.services.gpu_names())
        except Exception:  # noqa: BLE001
            names = []
        options += [(n, n) for n in names]
        if detected is None or detected.gpu is None:
            options.insert(0, ("no GPU detected: plan for the CPU", DETECTED))
        current = self.answers.gpu if self.answers.gpu in names else options[0][1]
        yield Label("GPU type (from the catalog)")
        yield Select(options, value=current, allow_blank=False, id="gpu", compact=True)
        with Horizontal(classes="row"):
            yield Label("count ", classes="field-label")
            count = self.answers.gpus or (detected.count if detected and detected.gpu else 1)
            yield Input(str(count), id="gpus", compact=True, restrict=r"[0-9]*")
            yield Label(" price $/GPU-hour ", classes="field-label")
            yield Input("" if self.answers.price_per_hour is None else f"{self.answers.price_per_hour:g}",
                        placeholder="catalog", id="price", compact=True)
        yield Static("", id="hw-info")

    def on_mount(self) -> None:
        self.query_one("#gpu", Select).focus()
        self._refresh()

    def on_select_changed(self, event: Select.Changed) -> None:
        self._refresh()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._refresh()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    def _refresh(self) -> None:
        try:
            _, hw = self._resolve()
        except (ValueError, StepFailed) as exc:
            self.query_one("#hw-info", Static).update("")
            self.show_error(str(exc))
            return
        self.show_error(None)
        self.query_one("#hw-info", Static).update(describe_hardware(hw, prefix="Plan for: "))

    def _resolve(self) -> tuple[dict[str, Any], Any]:
        """(answer fields, Hardware) for the current fields; ValueError/StepFailed when invalid."""
        choice = str(self.query_one("#gpu", Select).value)
        count_text = self.query_one("#gpus", Input).value.strip()
        if not count_text.isdigit() or int(count_text) < 1:
            raise ValueError(f"GPU count: must be a whole number >= 1, got '{count_text}'")
        count = int(count_text)
        price = parse_budget(self.query_one("#price", Input).value, "price per GPU-hour")
        if choice == DETECTED:
            # What `ftplan plan [--gpus N]` does without --gpu: the probe, with the count applied.
            detected = self.app.detected_hardware()
            gpus = count if detected.gpu is not None and count != detected.count else None
            hw = self.call(self.services.resolve_hardware, None, gpus, None, price,
                           probe_fn=self.app.detected_hardware)
            return {"gpu": None, "gpus": gpus, "price_per_hour": price, "hardware": hw}, hw
        hw = self.call(self.services.resolve_hardware, choice, count, None, price)
        return {"gpu": choice, "gpus": count, "price_per_hour": price, "hardware": hw}, hw

    def validate(self) -> str | None:
        try:
            self._resolve()
        except (ValueError, StepFailed) as exc:
            return str(exc)
        return None

    def answer(self) -> dict[str, Any]:
        return self._resolve()[0]

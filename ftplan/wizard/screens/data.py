"""Step 2: the dataset file (path completion), profiled as soon as it is read, through the same data path
`ftplan plan` and the run use: column mapping, the model's chat template check, exact token counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Select, Static
from textual.worker import get_current_worker

from ftplan.wizard.screens.base import StepFailed, StepScreen
from ftplan.wizard.widgets import PathSuggester
from planner.dataset.chat import SYSTEM_TURN_CHOICES
from planner.errors import FtplanError

SHOW_INVALID = 8  # invalid rows listed inline (the profile keeps the first 50)


class DataScreen(StepScreen):
    STEP = 2
    TITLE = "Data"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._checked: dict[tuple, tuple[Any, str | None]] = {}  # (path, columns, system turn) -> result
        self._value = ""  # the field's text last handled
        self._columns = self.answers.columns
        self._system_turn = self.answers.system_turn
        if self.answers.profile is not None:
            self._checked[self._key(self.answers.data)] = (self.answers.profile, None)

    def _key(self, value: str) -> tuple:
        return (value, tuple(sorted(self._columns.items())), self._system_turn)

    def compose_body(self) -> ComposeResult:
        yield Label("Training data: jsonl/json/csv/tsv/parquet/txt, compressed or not (→ completes)")
        yield Input(value=self.answers.data, placeholder="e.g. data/train.jsonl", suggester=PathSuggester(),
                    id="data")
        yield Label("Optional: columns NAME=COLUMN,... · system turn (templates without one)")
        columns = ",".join(f"{k}={v}" for k, v in self.answers.columns.items())
        with Horizontal(id="data-options"):
            yield Input(value=columns, placeholder="e.g. label=category,prompt=question", id="columns")
            yield Select([(f"system turn: {c}", c) for c in SYSTEM_TURN_CHOICES], value=self.answers.system_turn,
                         allow_blank=False, id="system-turn")
        yield Static("", id="profile")

    def on_mount(self) -> None:
        self.query_one("#data", Input).focus()
        self._value = self.answers.data.strip()  # the Changed an Input posts for its initial value is a no-op
        if self._value:
            self._check(self._value)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "system-turn" and str(event.value) != self._system_turn:
            self._system_turn = str(event.value)
            self._recheck()

    def _recheck(self) -> None:
        self.show_error(None)
        value = self.query_one("#data", Input).value.strip()
        if value and is_file(value):
            self.query_one("#profile", Static).update("reading…")
            self.debounce("data", lambda: self._check(value))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "columns":
            try:
                from planner.dataset.layouts import parse_columns

                columns = parse_columns(event.value.strip())
            except FtplanError as exc:
                self.show_error(str(exc))
                return
            if columns != self._columns:
                self._columns = columns
                self._recheck()
            return
        value = event.value.strip()
        if value == self._value:
            return
        self._value = value
        self.show_error(None)
        profile = self.query_one("#profile", Static)
        if self._key(value) in self._checked:
            self._show(value)
        elif not value or not is_file(value):
            profile.update("")  # a path being typed: no message until Next or a real file
        else:
            profile.update("reading…")
            self.debounce("data", lambda: self._check(value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    def _check(self, value: str) -> None:
        if self._key(value) in self._checked:
            self._show(value)
        else:
            self._profile(value)

    @work(thread=True, exclusive=True, group="data-profile")
    def _profile(self, value: str) -> None:
        self._profile_now(value)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, value)

    def _profile_now(self, value: str) -> tuple[Any, str | None]:
        from dataclasses import replace

        options = replace(self.answers, columns=self._columns, system_turn=self._system_turn).profile_options(
            self.answers.task or None)
        try:
            prof = self.call(self.services.profile_data, value, **options)
            found = (prof, None) if prof.valid_rows > 0 else (
                prof, f"{value}: no valid rows out of {prof.rows}: fix the rows listed above")
            if getattr(prof, "template_refusals", 0):
                fix = f"; choose system turn '{prof.suggested_fix.split()[-1]}'" if "--system-turn" in (
                    prof.suggested_fix or "") else ""
                found = (prof, f"the model's chat template refuses {prof.template_refusals} rows "
                               f"({prof.template_refusal}){fix}")
        except StepFailed as exc:
            found = (None, str(exc))
        self._checked[self._key(value)] = found
        return found

    def _show(self, value: str) -> None:
        if self.query_one("#data", Input).value.strip() != value:
            return
        if self._key(value) not in self._checked:
            return
        prof, error = self._checked[self._key(value)]
        self.query_one("#profile", Static).update(describe_profile(prof) if prof is not None else "")
        self.show_error(error)

    def validate(self) -> str | None:
        value = self.query_one("#data", Input).value.strip()
        if not value:
            return "enter the path of the training data file"
        _, error = self._checked.get(self._key(value)) or self._profile_now(value)
        self._show(value)
        return error

    def answer(self) -> dict[str, Any]:
        value = self.query_one("#data", Input).value.strip()
        return {"data": value, "profile": self._checked[self._key(value)][0], "columns": dict(self._columns),
                "system_turn": self._system_turn}


def is_file(text: str) -> bool:
    """True for an existing file; False for anything else, including names the OS rejects."""
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):  # too long, embedded NUL...
        return False


def describe_profile(p) -> Text:
    """The DataProfile as a few lines; invalid rows with their line numbers."""
    t = Text()
    t.append("✓ ", style="bold green")
    t.append(f"{p.format}", style="bold")
    t.append(f" records in a {p.file_format} file · {p.rows:,} rows ({p.valid_rows:,} valid) · "
             f"{p.size_bytes / 1024:,.0f} KiB\n")
    t.append(f"  tokens per example: p50 {p.tokens_p50:,} · p95 {p.tokens_p95:,} · p99 {p.tokens_p99:,} · "
             f"max {p.tokens_max:,}\n")
    t.append(f"  total {p.total_tokens:,} tokens · response mean {p.response_tokens_mean:,.0f} · "
             f"counted with {p.tokenizer}\n")
    t.append(f"  fields: {', '.join(p.fields)}\n")
    dup_style = "yellow" if p.duplicates else ""
    t.append(f"  duplicates: {p.duplicates:,}", style=dup_style)
    t.append(f" · empty: {p.empty_rows:,} · ")
    t.append(f"invalid: {p.invalid_count:,}", style="bold red" if p.invalid_count else "")
    if p.label_counts:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(p.label_counts.items(), key=lambda kv: -kv[1])[:6])
        t.append(f"\n  labels: {labels}")
    template = getattr(p, "template", "")
    if template:
        t.append(f"\n  chat template: {template} (every row rendered and tokenized as training will)")
    for kind, n in (getattr(p, "skipped", None) or {}).items():
        t.append(f"\n  left out: {n:,} rows: {kind}", style="yellow")
    for row in p.invalid[:SHOW_INVALID]:
        t.append(f"\n  line {row.line}: ", style="red")
        t.append(row.reason)
    if p.invalid_count > SHOW_INVALID:
        t.append(f"\n  … and {p.invalid_count - SHOW_INVALID} more invalid rows (dropped by the plan)")
    return t

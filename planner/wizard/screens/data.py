"""Step 2: the dataset file (path completion), profiled as soon as it is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from planner.wizard.screens.base import StepFailed, StepScreen
from planner.wizard.widgets import PathSuggester

SHOW_INVALID = 8  # invalid rows listed inline (the profile keeps the first 50)


class DataScreen(StepScreen):
    STEP = 2
    TITLE = "Data"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._checked: dict[str, tuple[Any, str | None]] = {}
        self._value = ""  # the field's text last handled
        if self.answers.profile is not None:
            self._checked[self.answers.data] = (self.answers.profile, None)

    def compose_body(self) -> ComposeResult:
        yield Label("Training data: a .jsonl, .json, .csv or .parquet file (→ or End completes the path)")
        yield Input(value=self.answers.data, placeholder="e.g. data/train.jsonl", suggester=PathSuggester(),
                    id="data")
        yield Static("", id="profile")

    def on_mount(self) -> None:
        self.query_one("#data", Input).focus()
        self._value = self.answers.data.strip()  # the Changed an Input posts for its initial value is a no-op
        if self._value:
            self._check(self._value)

    def on_input_changed(self, event: Input.Changed) -> None:
        value = event.value.strip()
        if value == self._value:
            return
        self._value = value
        self.show_error(None)
        profile = self.query_one("#profile", Static)
        if value in self._checked:
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
        if value in self._checked:
            self._show(value)
        else:
            self._profile(value)

    @work(thread=True, exclusive=True, group="data-profile")
    def _profile(self, value: str) -> None:
        self._profile_now(value)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, value)

    def _profile_now(self, value: str) -> tuple[Any, str | None]:
        tokenizer = getattr(self.answers.spec, "tokenizer_path", None)
        try:
            prof = self.call(self.services.profile_data, value, tokenizer_path=tokenizer,
                             task=self.answers.task or None)
            found = (prof, None) if prof.valid_rows > 0 else (
                prof, f"{value}: no valid rows out of {prof.rows}: fix the rows listed above")
        except StepFailed as exc:
            found = (None, str(exc))
        self._checked[value] = found
        return found

    def _show(self, value: str) -> None:
        if self.query_one("#data", Input).value.strip() != value:
            return
        prof, error = self._checked[value]
        self.query_one("#profile", Static).update(describe_profile(prof) if prof is not None else "")
        self.show_error(error)

    def validate(self) -> str | None:
        value = self.query_one("#data", Input).value.strip()
        if not value:
            return "enter the path of the training data file"
        _, error = self._checked.get(value) or self._profile_now(value)
        self._show(value)
        return error

    def answer(self) -> dict[str, Any]:
        value = self.query_one("#data", Input).value.strip()
        return {"data": value, "profile": self._checked[value][0]}


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
    for row in p.invalid[:SHOW_INVALID]:
        t.append(f"\n  line {row.line}: ", style="red")
        t.append(row.reason)
    if p.invalid_count > SHOW_INVALID:
        t.append(f"\n  … and {p.invalid_count - SHOW_INVALID} more invalid rows (dropped by the plan)")
    return t

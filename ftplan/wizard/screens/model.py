"""Step 1: the model: a catalog name (with suggestions), a hub id or a local folder, validated live."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from ftplan.wizard.screens.base import StepFailed, StepScreen
from ftplan.wizard.widgets import params

MAX_MATCHES = 50


class ModelScreen(StepScreen):
    STEP = 1
    TITLE = "Model"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("down", "browse", "Browse catalog", show=False)]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._names: list[str] = []
        self._checked: dict[str, tuple[Any, str | None]] = {}  # value -> (spec, error)
        self._value = ""  # the field's text last handled
        if self.answers.spec is not None:
            self._checked[self.answers.model] = (self.answers.spec, None)

    def compose_body(self) -> ComposeResult:
        try:
            self._names = list(self.services.model_names())
        except Exception:  # noqa: BLE001 - no catalog listing: hub ids and paths still work
            self._names = []
        yield Label("Model: a catalog name, a Hugging Face hub id (org/name) or a local folder")
        yield Input(
            value=self.answers.model,
            placeholder="e.g. Qwen/Qwen2.5-0.5B or ./my-model",
            suggester=SuggestFromList(self._names, case_sensitive=False),
            id="model",
        )
        yield Static("", id="model-info")
        yield Label("Catalog matches (↓ to browse, Enter to pick):", classes="hint")
        yield OptionList(*self._options(self.answers.model), id="matches", compact=True)

    def on_mount(self) -> None:
        self.query_one("#model", Input).focus()
        self._value = self.answers.model.strip()  # the Changed an Input posts for its initial value is a no-op
        if self._value:
            self._check(self._value)

    def action_browse(self) -> None:
        """↓ in the text field moves to the catalog matches (the list handles ↓ itself)."""
        matches = self.query_one("#matches", OptionList)
        if matches.option_count:
            if matches.highlighted is None:
                matches.highlighted = 0
            matches.focus()

    def _options(self, text: str) -> list[Option]:
        needle = text.strip().lower()
        hits = [n for n in self._names if needle in n.lower()] if needle else self._names
        return [Option(n, id=f"m{i}") for i, n in enumerate(hits[:MAX_MATCHES])]

    # -- live validation --------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        value = event.value.strip()
        if event.input.id != "model" or value == self._value:
            return
        self._value = value
        matches = self.query_one("#matches", OptionList)
        matches.clear_options()
        matches.add_options(self._options(value))
        self.show_error(None)
        if not value:
            self.query_one("#model-info", Static).update("")
        elif value in self._checked:
            self._show(value)
        else:
            self.query_one("#model-info", Static).update("checking…")
            self.debounce("model", lambda: self._check(value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        field = self.query_one("#model", Input)
        field.value = str(event.option.prompt)
        field.focus()

    def _check(self, value: str) -> None:
        if value in self._checked:
            self._show(value)
        else:
            self._load(value)

    @work(thread=True, exclusive=True, group="model-check")
    def _load(self, value: str) -> None:
        result = self._load_now(value)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, value)
        return result

    def _load_now(self, value: str) -> tuple[Any, str | None]:
        try:
            spec = self.call(self.services.load_model_spec, value)
            found = (spec, None)
        except StepFailed as exc:
            found = (None, str(exc))
        self._checked[value] = found
        return found

    def _show(self, value: str) -> None:
        if self.query_one("#model", Input).value.strip() != value:
            return  # the user typed on meanwhile
        spec, error = self._checked[value]
        info = self.query_one("#model-info", Static)
        if error:
            info.update("")
            self.show_error(error)
            return
        self.show_error(None)
        info.update(describe_spec(spec))

    # -- answer ---------------------------------------------------------------------------------
    def validate(self) -> str | None:
        value = self.query_one("#model", Input).value.strip()
        if not value:
            return "enter a model: a catalog name, a hub id (org/name) or a local folder"
        _, error = self._checked.get(value) or self._load_now(value)
        self._show(value)
        return error

    def answer(self) -> dict[str, Any]:
        value = self.query_one("#model", Input).value.strip()
        return {"model": value, "spec": self._checked[value][0]}


def describe_spec(spec) -> str:
    """One line per fact the planner read: architecture, size, shape, where it came from."""
    total = spec.param_counts().total if hasattr(spec, "param_counts") else 0
    moe = f" · MoE {spec.num_experts} experts" if getattr(spec, "num_experts", 0) else ""
    return (
        f"[b green]✓[/] {spec.architecture} ({spec.model_type}) · [b]{params(total)}[/] parameters{moe}\n"
        f"  {spec.num_layers} layers · hidden {spec.hidden_size} · vocab {spec.vocab_size:,} · "
        f"context {spec.max_position_embeddings:,} · {spec.torch_dtype} · {spec.source}"
    )

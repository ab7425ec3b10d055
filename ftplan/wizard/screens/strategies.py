"""Step 5: every strategy side by side (memory bar per GPU, verdict, time, cost); pick one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from ftplan.wizard.screens.base import StepFailed, StepScreen
from ftplan.wizard.widgets import GIB, gib, hours, memory_bar, memory_legend, money, params, verdict_text
from planner.vocab import ADAPTER_METHODS

BAR_WIDTH = 36


def strategy_names(result) -> list[str]:
    """One unique name per estimate: the planner's candidate names (PlanResult.options), same order."""
    options = list(getattr(result, "options", []) or [])
    estimates = list(getattr(result, "estimates", []) or [])
    if len(options) == len(estimates):
        return [o.name for o in options]
    return [e.name for e in estimates]


def chosen_index(result) -> int | None:
    """Index of the planner's choice among the estimates (identity first, then name)."""
    chosen = getattr(result, "chosen", None)
    estimates = list(getattr(result, "estimates", []) or [])
    for i, e in enumerate(estimates):
        if e is chosen:
            return i
    names = [e.name for e in estimates]
    return names.index(chosen.name) if chosen is not None and chosen.name in names else None


def _option_for(result, est):
    """The planner's sized Option behind a StrategyEstimate (PlanResult.options, same order)."""
    for opt in getattr(result, "options", []) or []:
        if opt.estimate is est:
            return opt
    return None


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def strategy_overrides(result, est) -> dict[str, str]:
    """The `--set key=value` pairs that turn the recommended plan into ``est``'s setup.

    Only the fields that differ from the plan are set, exactly as a user would type them after
    `ftplan plan --set`; the planner re-estimates and warns (planner.rules.overrides.apply_plan_overrides).
    """
    s = est.setup
    opt = _option_for(result, est)
    wanted = {
        "strategy.method": s.method,
        "strategy.distribution": s.distribution,
        "strategy.mixed_precision": s.mixed_precision,
        "strategy.offload_optimizer": s.offload_optimizer,
        "strategy.offload_params": s.offload_params,
        "strategy.optimizer": s.optimizer,
        "strategy.gradient_checkpointing": opt.gradient_checkpointing if opt else s.gradient_checkpointing,
        "training.micro_batch": opt.micro_batch if opt else s.micro_batch,
        "training.grad_accum": opt.grad_accum if opt else s.grad_accum,
    }
    plan = result.plan
    if s.method in ADAPTER_METHODS and plan.lora is None:  # from full: the candidate's LoRA shape
        wanted.update({"lora.r": s.lora_r, "lora.alpha": s.lora_alpha})
    out = {}
    for key, value in wanted.items():
        section, _, name = key.partition(".")
        current = getattr(getattr(plan, section, None), name, None)
        if _text(current) != _text(value):
            out[key] = _text(value)
    return out


def capacity(hardware) -> int:
    """What the bar is scaled to: usable memory per GPU (host RAM when planning for the CPU)."""
    if hardware is None:
        return 0
    if hardware.gpu is None:
        return int(getattr(hardware, "cpu_memory_bytes", 0) or 0)
    return int(hardware.free_memory_bytes)


def strategy_row(name: str, est, cap: int, *, recommended: bool) -> Text:
    """Two lines: name, verdict, memory, time, cost; then the memory bar."""
    t = Text()
    t.append("★ " if recommended else "  ", style="bold yellow")
    t.append(f"{name:<19}", style="bold" if recommended else "")
    t.append_text(verdict_text(f"{est.verdict:<8}"))
    cap_text = f"{cap / GIB:.0f}" if cap else "?"
    t.append(f"{est.memory.total / GIB:>6.1f}/{cap_text:<3} GiB ")
    t.append(f"{hours(est.time_hours):>8} {money(est.cost_usd):>9}")
    t.append("\n  ")
    t.append_text(memory_bar(est.memory, cap, BAR_WIDTH))
    t.append(f"  {params(est.trainable_params)} trainable", style="dim")
    return t


def strategy_detail(name: str, est) -> Text:
    m = est.memory
    t = Text()
    t.append(f"{name}: ", style="bold")
    t.append(f"weights {gib(m.weights)} · gradients {gib(m.gradients)} · optimizer {gib(m.optimizer)} · "
             f"activations {gib(m.activations)} · temporary {gib(m.temporary)} · overhead {gib(m.overhead)}")
    if m.cpu_bytes:
        t.append(f" · host RAM {gib(m.cpu_bytes)}")
    t.append(f"\n  max micro-batch {est.max_micro_batch} at seq {est.setup.seq_len} · "
             f"max seq {est.max_seq_len} · {est.tokens_per_second:,.0f} tokens/s")
    for note in m.notes:
        t.append(f"\n  {note}", style="dim")
    return t


REASON_FIELDS = ("strategy.method", "strategy.distribution", "strategy.gradient_checkpointing")


def recommendation_reasons(result) -> Text:
    """The planner's reasons for its choice: its decisions on the strategy fields."""
    t = Text()
    index = chosen_index(result)
    name = strategy_names(result)[index] if index is not None else "?"
    t.append(f"Recommended: {name}", style="bold yellow")
    plan = getattr(result, "plan", None)
    for d in getattr(plan, "decisions", []) or []:
        if d.field in REASON_FIELDS:
            t.append(f"\n  {d.field} = {d.value}: ", style="bold")
            t.append(str(d.reason))
    return t


class StrategyScreen(StepScreen):
    STEP = 5
    TITLE = "Strategies"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.result = None
        self.error: str | None = None
        try:
            # The recommendation is the planner's answer without the user's strategy pick.
            self.result = self.plan_result(replace(self.answers, strategy_overrides={}))
        except StepFailed as exc:
            self.error = str(exc)
        self.estimates = list(getattr(self.result, "estimates", []) or [])
        self.names = strategy_names(self.result) if self.result is not None else []
        self.recommended = chosen_index(self.result) if self.result is not None else None

    def compose_body(self) -> ComposeResult:
        if self.result is None:
            yield Static("The planner could not estimate these inputs; go back and change them.")
            return
        cap = capacity(self.answers.hardware)
        yield Label("  strategy           verdict  memory/GPU       time      cost", classes="hint")
        yield OptionList(*[Option(strategy_row(n, e, cap, recommended=i == self.recommended), id=f"s{i}")
                           for i, (n, e) in enumerate(zip(self.names, self.estimates))],
                         id="strategies", compact=True)
        yield Label(memory_legend(), classes="hint")
        yield Static("", id="detail")
        yield Static(recommendation_reasons(self.result), id="why")

    def on_mount(self) -> None:
        if self.error:
            self.show_error(self.error)
            return
        options = self.query_one("#strategies", OptionList)
        want = self.answers.strategy
        options.highlighted = self.names.index(want) if want in self.names else (self.recommended or 0)
        options.focus()

    def _highlighted(self) -> int | None:
        index = self.query_one("#strategies", OptionList).highlighted
        return index if index is not None and index < len(self.estimates) else None

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        index = self._highlighted()
        if index is not None:
            self.query_one("#detail", Static).update(strategy_detail(self.names[index], self.estimates[index]))
            self.show_error(None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_next()

    def _overrides(self, index: int) -> dict[str, str]:
        if index == self.recommended:
            return {}
        return strategy_overrides(self.result, self.estimates[index])

    def validate(self) -> str | None:
        if self.result is None:
            return self.error or "no estimate"
        index = self._highlighted()
        if index is None:
            return "pick a strategy (↑/↓)"
        overrides = self._overrides(index)
        if overrides:  # a pick the planner rejects (an impossible combination) blocks Next here
            try:
                self.plan_result(replace(self.answers, strategy_overrides=overrides))
            except StepFailed as exc:
                return str(exc)
        return None

    def answer(self) -> dict[str, Any]:
        index = self._highlighted()
        overrides = self._overrides(index)
        return {"strategy": self.names[index] if overrides else "", "strategy_overrides": overrides}

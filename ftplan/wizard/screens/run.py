"""Step 8: the run: progress with ETA, a live loss curve, measured memory against the estimate, Stop.

The training is `ftplan run PLAN_DIR` in a subprocess (ftplan.wizard.runner); everything shown is
read from the executor's metrics.jsonl and output, compared with the plan's own estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, Label, Log, ProgressBar, Sparkline, Static

from ftplan.wizard.runner import MetricsTail, RunProcess, metrics_path
from ftplan.wizard.screens.base import StepScreen, describe_error
from ftplan.wizard.widgets import GIB, gib

POLL_S = 0.5
STOPPED_EXIT = 130  # 128 + SIGINT: the shell convention (and `ftplan`'s exit code on Ctrl-C)

# (metrics.jsonl key in GiB, what it is, the plan.estimate fields it is compared with): the same pairs
# as the executor's end-of-run report (executor/report.py: compare_with_estimate).
MEMORY_PAIRS = (
    ("cuda_max_allocated_gb", "CUDA peak allocated", ("peak_allocated",)),
    ("cuda_max_reserved_gb", "reserved", ("total",)),
    ("peak_rss_gb", "process peak RSS", ("cpu_bytes", "total")),
)


def _peak(records: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return max(values) if values else None


def memory_line(records: list[dict[str, Any]], plan) -> Text:
    """Measured peak memory so far (from metrics.jsonl) against the plan's estimate, with the error."""
    t = Text("memory: ")
    on_gpu = _peak(records, "cuda_max_allocated_gb") is not None
    shown = 0
    for key, label, est_fields in MEMORY_PAIRS:
        if key.startswith("cuda") != on_gpu:
            continue
        measured = _peak(records, key)
        if measured is None:
            continue
        estimate = next((getattr(plan.estimate, f) for f in est_fields if getattr(plan.estimate, f)), 0)
        t.append(" · " if shown else "")
        t.append(f"{label} {measured:.2f} GiB", style="bold")
        if estimate:
            t.append(f" (estimate {gib(estimate)}, {(measured * GIB - estimate) / estimate:+.0%})")
        shown += 1
    if not shown:
        t.append("waiting for the first log…", style="dim")
    return t


class RunScreen(StepScreen):
    STEP = 8
    TITLE = "Run"
    NEXT_LABEL = "Close ▶"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+s", "stop", "Stop (checkpoint)")]

    def __init__(self, answers, services, *, plan_dir: str | Path | None = None) -> None:
        super().__init__(answers, services)
        self.plan = answers.result.plan
        self.plan_dir = Path(plan_dir or answers.out_dir)
        self.records: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.total_steps = max(int(self.plan.estimate.steps or 0), int(self.plan.training.max_steps or 0), 0)
        self.tail = MetricsTail(metrics_path(self.plan_dir, self.plan.output_dir))
        self.process = RunProcess(services.run_argv(self.plan_dir))
        self.exit_code: int | None = None

    def compose_body(self) -> ComposeResult:
        yield Static(f"ftplan run {self.plan_dir}", id="run-command")
        yield ProgressBar(total=self.total_steps or None, show_eta=True, id="progress")
        yield Static("starting…", id="run-status")
        yield Label("loss")
        yield Sparkline([], id="loss")
        yield Static(memory_line([], self.plan), id="memory")
        with Horizontal(classes="row"):
            yield Button("Stop (checkpoint)", id="stop", variant="error", compact=True)
        yield Log(id="log", max_lines=500)

    def on_mount(self) -> None:
        self.query_one("#back", Button).disabled = True
        self.query_one("#next", Button).disabled = True
        try:
            self.process.start()
        except Exception as exc:  # noqa: BLE001 - e.g. the executor is not installed
            self._finished(None, describe_error(exc))
            return
        self.set_interval(POLL_S, self.poll)

    def on_unmount(self) -> None:
        self.process.stop()  # leaving the wizard: the run checkpoints and stops, nothing is orphaned

    def action_back(self) -> None:  # a run cannot be un-run; Stop first
        pass

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "stop":
            event.stop()
            self.action_stop()
            return
        super().on_button_pressed(event)

    def action_stop(self) -> None:
        if self.process.running:
            self.process.stop()
            self.query_one("#stop", Button).disabled = True
            self.query_one("#run-status", Static).update("stopping: saving a checkpoint after this step…")

    def poll(self) -> None:
        self.poll_output()
        code = self.process.poll()
        if code is not None and self.exit_code is None:
            self.process.drain()
            self.poll_output()
            self._finished(code, None)

    def poll_output(self) -> None:
        """The executor's new output lines and metrics records, shown."""
        log = self.query_one("#log", Log)
        for line in self.process.new_lines():
            log.write_line(line)
        new = self.tail.read_new()
        if new:
            self.records.extend(new)
            self._update(new)

    def _update(self, new: list[dict[str, Any]]) -> None:
        self.losses.extend(float(r["loss"]) for r in new if isinstance(r.get("loss"), (int, float)))
        self.query_one("#loss", Sparkline).data = self.losses[-200:]
        last = self.records[-1]
        step = int(last.get("step", 0) or 0)
        self.query_one("#progress", ProgressBar).update(progress=step)
        parts = [f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")]
        if self.losses:
            parts.append(f"loss {self.losses[-1]:.4f}")
        evals = [r["eval_loss"] for r in self.records if isinstance(r.get("eval_loss"), (int, float))]
        if evals:
            parts.append(f"val loss {evals[-1]:.4f}")
        tps = [r["tokens_per_second"] for r in self.records if isinstance(r.get("tokens_per_second"), (int, float))]
        if tps:
            parts.append(f"{tps[-1]:,.0f} tokens/s")
        self.query_one("#run-status", Static).update(" · ".join(parts))
        self.query_one("#memory", Static).update(memory_line(self.records, self.plan))

    def _finished(self, code: int | None, error: str | None) -> None:
        self.exit_code = -1 if code is None else code
        self.query_one("#stop", Button).disabled = True
        self.query_one("#next", Button).disabled = False
        status = self.query_one("#run-status", Static)
        if error:
            self.show_error(error)
        elif self.process.stop_requested and code in (0, STOPPED_EXIT):
            status.update(Text("stopped: checkpoint saved; `ftplan run` on this folder resumes it", style="yellow"))
        elif code == 0:
            status.update(Text(f"finished · results in {self.plan_dir}/REPORT.md", style="bold green"))
        else:
            tail = next((ln for ln in reversed(self.process.lines) if ln.strip()), "")
            self.show_error(f"the run exited with code {code}: {tail}")
        self.query_one("#next", Button).focus()

    def validate(self) -> str | None:
        if self.exit_code is None:
            return "the run is still going: Stop it first (ctrl+s) or wait for it to finish"
        return None

    def answer(self) -> dict[str, Any]:
        return {}

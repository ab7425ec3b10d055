"""Step 8: the run: progress with ETA, a live loss curve, measured memory against the estimate, Stop.

The training is `ftplan run PLAN_DIR` in a subprocess (planner.wizard.runner); everything shown is
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

from planner.wizard.runner import MetricsTail, RunProcess, metrics_path
from planner.wizard.screens.base import StepScreen, describe_error
from planner.wizard.widgets import GIB, gib

POLL_S = 0.5
STOPPED_EXIT = 130  # 128 + SIGINT: the shell convention (and `ftplan`'s exit code on Ctrl-C)
# metrics.jsonl keys written by executor/callbacks.py (MetricsCallback / memory_now), in GiB.
MEASURED_KEYS = ("cuda_max_allocated_gb", "peak_rss_gb")


def measured_memory(records: list[dict[str, Any]]) -> tuple[str, float] | None:
    """(key, GiB) of the highest peak memory the executor reported: CUDA allocated, else process RSS."""
    for key in MEASURED_KEYS:
        values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if values:
            return key, max(values)
    return None


def memory_line(records: list[dict[str, Any]], plan) -> Text:
    t = Text("memory: ")
    measured = measured_memory(records)
    estimate = plan.estimate.peak_allocated or plan.estimate.total
    if measured is None:
        t.append("waiting for the first log…", style="dim")
        return t
    key, value = measured
    what = "CUDA peak allocated" if key.startswith("cuda") else "process peak RSS (CPU run)"
    t.append(f"{what} {value:.2f} GiB", style="bold")
    if estimate and key.startswith("cuda"):
        err = (value * GIB - estimate) / estimate
        t.append(f" vs estimate {gib(estimate)} ({err:+.0%})")
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

"""RunSummary (run_summary.json), the REPORT.md section, the loss-curve PNG, estimate vs measured."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from executor.paths import RunPaths
from planner.files import write_atomic
from planner.plan import Plan
from planner.units import GIB


@dataclass
class Comparison:
    """One planner estimate against what the run measured; error = (measured - estimate) / estimate."""

    quantity: str
    unit: str
    estimate: float
    measured: float

    @property
    def error_pct(self) -> float | None:
        if not self.estimate or self.measured is None:
            return None
        return 100.0 * (self.measured - self.estimate) / self.estimate


@dataclass
class RunSummary:
    """What ``run_plan`` returns and writes to run_summary.json."""

    status: str  # completed | interrupted | diverged
    plan_dir: str
    output_dir: str
    task: str
    method: str
    device: str
    world_size: int = 1
    global_step: int = 0
    resumed_from_step: int = 0
    train_seconds: float = 0.0  # trainer.train() time, incl. in-training evaluation and checkpoint saves
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0  # evaluation inside trainer.train() (sum of the logged eval_runtime)
    tokens_seen: int = 0
    tokens_per_second: float = 0.0
    seconds_per_step: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    final_train_loss: float | None = None
    peak_memory_gb: dict[str, float] = field(default_factory=dict)
    base: dict = field(default_factory=dict)  # eval metrics of the base model
    tuned: dict = field(default_factory=dict)  # eval metrics of the fine-tuned model
    comparisons: list[Comparison] = field(default_factory=list)
    data: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    fallbacks: list[dict] = field(default_factory=list)
    message: str = ""
    exit_code: int = 0  # what `ftplan run` exits with: 0, or 130 / 143 after a SIGINT / SIGTERM stop

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["comparisons"] = [{**dataclasses.asdict(c), "error_pct": c.error_pct} for c in self.comparisons]
        return d


def compare_with_estimate(plan: Plan, summary: RunSummary) -> list[Comparison]:
    """The planner's numbers (plan.estimate) next to the measured ones, where both exist."""
    est, mem = plan.estimate, summary.peak_memory_gb
    out: list[Comparison] = []
    if "cuda_max_allocated_gb" in mem:
        if est.peak_allocated:
            out.append(
                Comparison(
                    "peak GPU memory allocated", "GiB", est.peak_allocated / GIB, mem["cuda_max_allocated_gb"]
                )
            )
        if est.total:
            out.append(
                Comparison("peak GPU memory reserved", "GiB", est.total / GIB, mem["cuda_max_reserved_gb"])
            )
    elif est.cpu_bytes or est.total:
        # CPU run: no allocator statistics, so the process's peak RSS (Python, torch libraries, weights,
        # activations) is compared with the estimate's total (peak allocated + fixed overhead); the two
        # measure different things and agree only to ~10% (BENCHMARKS.md, "Time model calibration").
        out.append(
            Comparison(
                "peak process memory (RSS)",
                "GiB",
                (est.cpu_bytes or est.total) / GIB,
                mem.get("peak_rss_gb", 0.0),
            )
        )
    # The time model covers the training steps only (planner/cost.py): evaluation inside the loop is
    # taken out of the measured time; base/tuned generation runs outside train_seconds already.
    if est.time_hours and summary.status == "completed" and not summary.resumed_from_step:
        steps_only = max(summary.train_seconds - summary.eval_seconds, 0.0)
        out.append(Comparison("training time", "s", est.time_hours * 3600, steps_only))
    if est.tokens_per_second:
        out.append(Comparison("throughput", "tokens/s", est.tokens_per_second, summary.tokens_per_second))
    if est.steps:
        out.append(Comparison("optimizer steps", "steps", est.steps, summary.global_step))
    if est.tokens and summary.status == "completed" and not summary.resumed_from_step:
        out.append(Comparison("tokens trained", "tokens", est.tokens, summary.tokens_seen))
    return out


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: skip it
    return rows


def plot_loss_curve(metrics: list[dict], out: Path) -> Path | None:
    """Training and validation loss against the optimizer step (matplotlib, Agg: no display needed)."""
    # A resumed run logs again the steps after its checkpoint: the last record of a step wins.
    train = sorted({m["step"]: m["loss"] for m in metrics if _finite(m.get("loss"))}.items())
    val = sorted({m["step"]: m["eval_loss"] for m in metrics if _finite(m.get("eval_loss"))}.items())
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def write_summary(summary: RunSummary, paths: RunPaths) -> Path:
    return write_atomic(paths.summary, json.dumps(summary.to_dict(), indent=2, default=str) + "\n")


def fmt_value(v) -> str:
    """A metric as a table cell: 4 significant digits, an en dash for none."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def report_section(summary: RunSummary, paths: RunPaths) -> str:
    """Markdown appended to REPORT.md: headline numbers, base vs tuned, estimate vs measured."""
    lines = [
        "",
        f"## Run results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- Status: **{summary.status}**{(' – ' + summary.message) if summary.message else ''}",
        f"- Device: {summary.device} x {summary.world_size}; {summary.task} / {summary.method}",
        (
            f"- Optimizer steps: {summary.global_step}"
            + (f" (resumed from step {summary.resumed_from_step})" if summary.resumed_from_step else "")
        ),
        (
            f"- Wall time: {summary.wall_seconds:.1f} s (training {summary.train_seconds:.1f} s, of which "
            f"evaluation {summary.eval_seconds:.1f} s; {summary.seconds_per_step:.3f} s/step); throughput "
            f"{summary.tokens_per_second:.0f} tokens/s (training steps only)"
        ),
        f"- Trainable parameters: {summary.trainable_params:,} of {summary.total_params:,}",
        "- Peak memory: " + ", ".join(f"{k} {v:.3f} GiB" for k, v in summary.peak_memory_gb.items()),
        f"- Final training loss: {fmt_value(summary.final_train_loss)}",
    ]
    d = summary.data
    if d:
        lines.append(
            f"- Data: {d.get('rows_read', 0):,} rows read, {d.get('train_rows', 0):,} train / "
            f"{d.get('val_rows', 0):,} validation; dropped {d.get('invalid_dropped', 0):,} malformed, "
            f"{d.get('duplicates_dropped', 0):,} duplicates, {d.get('untrained_dropped', 0):,} with no trained "
            f"token within seq_len; {d.get('truncated_rows', 0):,} cut at seq_len"
        )
        lines += [f"- Left out: {v:,} rows: {k.removeprefix('skipped: ')}" for k, v in d.items()
                  if k.startswith("skipped: ")]
    keys = [k for k in summary.tuned if k not in ("examples", "samples")]
    if keys:
        lines += ["", "| metric | base | fine-tuned |", "|---|---|---|"]
        lines += [f"| {k} | {fmt_value(summary.base.get(k))} | {fmt_value(summary.tuned.get(k))} |" for k in keys]
    if summary.comparisons:
        lines += [
            "",
            "| estimate vs measured | unit | estimate | measured | error |",
            "|---|---|---|---|---|",
        ]
        notes = []
        if any(c.quantity.startswith("peak process memory") for c in summary.comparisons):
            notes.append("on CPU the memory row compares the process's peak RSS with the estimated total "
                         "(peak allocated + overhead): an approximation, torch has no CPU allocator statistics")
        if any(c.quantity == "training time" for c in summary.comparisons):
            notes.append("training time and throughput cover the training steps only (in-training evaluation "
                         "excluded, checkpoint saves included; base/tuned evaluation and loading are in the wall time)")
        for c in summary.comparisons:
            err = f"{c.error_pct:+.1f}%" if c.error_pct is not None else "–"
            lines.append(f"| {c.quantity} | {c.unit} | {fmt_value(c.estimate)} | {fmt_value(c.measured)} | {err} |")
        lines += [""] + [f"- Note: {n}" for n in notes] if notes else []
    for fb in summary.fallbacks:
        lines.append(f"- OOM fallback applied at step {fb['step']}: {fb['set']} ({fb['reason']})")
    if summary.artifacts:
        lines += [""] + [f"- {k}: `{v}`" for k, v in summary.artifacts.items()]
    if "loss_curve" in summary.artifacts:
        rel = os.path.relpath(summary.artifacts["loss_curve"], paths.plan_dir)
        lines += ["", f"![loss curve]({rel})"]
    return "\n".join(lines) + "\n"


def append_report(summary: RunSummary, paths: RunPaths) -> Path:
    with paths.report.open("a", encoding="utf-8") as fh:
        fh.write(report_section(summary, paths))
    return paths.report

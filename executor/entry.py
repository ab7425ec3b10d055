"""The executor's process entry: ``run_in_process`` trains a plan folder in this process and prints the
headline (``python -m executor run`` on every rank; ``ftplan run`` in one process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from planner.errors import FtplanError


def headline(summary) -> str:
    """Two or three lines a person reads first: status, steps, time, memory, the metric base -> tuned."""
    mem = summary.peak_memory_gb
    peak = mem.get("cuda_max_reserved_gb", mem.get("peak_rss_gb", 0.0))
    lines = [
        (
            f"ftplan: {summary.status}: {summary.global_step} steps in {summary.wall_seconds:.0f} s, "
            f"{summary.tokens_per_second:.0f} tokens/s, peak memory {peak:.2f} GiB"
        )
    ]
    for key in ("exact_match", "accuracy", "rouge_l", "loss", "perplexity"):
        if summary.tuned.get(key) is not None:
            base = summary.base.get(key)
            before = f"{base:.4g} -> " if isinstance(base, (int, float)) else ""
            lines.append(f"  {key}: {before}{summary.tuned[key]:.4g}")
    for c in summary.comparisons:
        if c.error_pct is not None:
            lines.append(
                f"  {c.quantity}: estimated {c.estimate:.4g} {c.unit}, measured {c.measured:.4g} "
                f"({c.error_pct:+.0f}%)"
            )
    if summary.message:
        lines.append(f"  {summary.message}")
    return "\n".join(lines)


def run_in_process(plan_dir: Path, allow_data_change: bool = False) -> int:
    from executor.preflight import check_inputs, resolve_relative_paths
    from planner.plan import load_plan

    check_inputs(resolve_relative_paths(load_plan(plan_dir), Path(plan_dir).resolve()))  # before torch loads
    from executor.run import run_plan

    try:
        summary = run_plan(plan_dir, allow_data_change=allow_data_change)
    except FtplanError:
        sys.stderr.write("\n")  # a progress bar may be mid-line: the one-line error starts a line of its own
        raise
    if int(os.environ.get("RANK", "0")) == 0:  # one headline per run, not one per process
        click.echo(headline(summary))
        click.echo(f"ftplan: report: {Path(summary.plan_dir) / 'REPORT.md'}")
    return summary.exit_code  # 130 after Ctrl-C, 143 after SIGTERM (checkpoint saved), else 0

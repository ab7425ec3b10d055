"""How long ``ftplan plan`` takes end to end: catalog model, a 10K-row dataset generated on the fly.

Two measurements, both of the real command (profile the file, estimate every strategy, decide, render,
validate, write the folder):

- ``in-process``: ``ftplan.cli.main([...])`` called repeatedly in one interpreter (the planner's own
  work, what the wizard pays per plan); median and max of ``--repeat`` runs after one warm-up.
- ``cold CLI``: ``python -m ftplan.cli plan ...`` in a fresh process (adds interpreter start-up and
  imports: what a user waits for at the shell); median of ``--cold`` runs.

The target (issue 3) is under one second. Nothing is downloaded and no GPU is needed (the hardware is
named with --gpu). Run:

    .venv/bin/python benchmarks/plan_speed.py [--rows 10000] [--repeat 7] [--cold 3] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 1.0
CASES = [  # (model, gpu, gpus, task): a small and a large catalog model, one and eight GPUs
    ("Qwen/Qwen2.5-0.5B", "A100-80GB", 1, "sft"),
    ("meta-llama/Llama-3.1-8B", "RTX-4090", 1, "sft"),
    ("meta-llama/Llama-3.1-70B", "H100-SXM", 8, "sft"),
]


def write_dataset(path: Path, rows: int, seed: int = 0) -> None:
    """Alpaca rows with varied lengths (20-400 words), a few duplicates, like a real instruction set."""
    rng = random.Random(seed)
    words = [
        "the",
        "model",
        "learns",
        "to",
        "answer",
        "questions",
        "about",
        "data",
        "plans",
        "memory",
        "time",
        "cost",
        "tokens",
    ]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            n_in, n_out = rng.randint(5, 120), rng.randint(10, 300)
            row = {
                "instruction": f"Task {i % 9000}: " + " ".join(rng.choice(words) for _ in range(n_in)),
                "input": "",
                "output": " ".join(rng.choice(words) for _ in range(n_out)),
            }
            fh.write(json.dumps(row) + "\n")


def args_for(model: str, gpu: str, gpus: int, task: str, data: Path, out: Path) -> list[str]:
    return [
        "plan",
        "--model",
        model,
        "--data",
        str(data),
        "--task",
        task,
        "--gpu",
        gpu,
        "--gpus",
        str(gpus),
        "--out",
        str(out),
        "--force",
    ]


def in_process(argv: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of each run after a warm-up."""
    from ftplan.cli import main

    walls, cpus = [], []
    for i in range(repeat + 1):
        sink = io.StringIO()
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(sink):
            rc = main(argv)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if rc != 0:
            raise SystemExit(f"ftplan plan failed (rc={rc}): {' '.join(argv)}")
        if i:  # the first run pays the imports: reported by the cold CLI measurement instead
            walls.append(dt)
            cpus.append(dc)
    return walls, cpus


def cold(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds of the child) of fresh `python -m ftplan.cli plan` processes."""
    import resource

    walls, cpus = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ftplan.cli", *argv], capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
    return walls, cpus


def stages(
    model: str, gpu: str, gpus: int, task: str, data: Path, out: Path, repeat: int
) -> dict[str, float]:
    """Median CPU seconds of each stage: profile the data, decide (rules + estimates), render + write."""
    from planner.dataset import profile_data
    from planner.hardware import resolve_hardware
    from planner.model_spec import load_model_spec
    from planner.render import write_plan_folder
    from planner.request import PlanRequest
    from planner.rules import make_plan

    spec, hw = load_model_spec(model), resolve_hardware(gpu, gpus)
    req = PlanRequest(model=model, data=str(data), task=task)
    acc: dict[str, list[float]] = {"profile": [], "rules": [], "render": []}
    for _ in range(repeat):
        c0 = time.process_time()
        prof = profile_data(str(data), tokenizer_path=spec.tokenizer_path, task=task)
        c1 = time.process_time()
        res = make_plan(req, hardware=hw, profile=prof, spec=spec)
        c2 = time.process_time()
        write_plan_folder(res, out, force=True)
        c3 = time.process_time()
        for k, v in zip(acc, (c1 - c0, c2 - c1, c3 - c2), strict=True):
            acc[k].append(v)
    return {k: statistics.median(v) for k, v in acc.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--markdown", metavar="FILE", help="also write the markdown table to FILE")
    ns = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ftplan-bench-"))
    try:
        data = tmp / "train.jsonl"
        write_dataset(data, ns.rows)
        rows = []
        for model, gpu, gpus, task in CASES:
            argv = args_for(model, gpu, gpus, task, data, tmp / "plan")
            walls, cpus = in_process(argv, ns.repeat)
            cwalls, ccpus = cold(argv, ns.cold)
            rows.append(
                (
                    model,
                    f"{gpus}x {gpu}",
                    statistics.median(walls),
                    statistics.median(cpus),
                    statistics.median(cwalls),
                    statistics.median(ccpus),
                )
            )
        parts = stages(*CASES[0], data, tmp / "plan", ns.repeat)
        size_mb = data.stat().st_size / 1e6
        lines = [
            f"`ftplan plan` on a {ns.rows:,}-row alpaca file ({size_mb:.1f} MB), catalog models, named GPUs; "
            f"Python {platform.python_version()}, {os.cpu_count()} CPU cores shared with other jobs (load "
            f"average {os.getloadavg()[0]:.1f}), so CPU seconds are the load-independent figure. Medians of "
            f"{ns.repeat} in-process runs (after a warm-up) and of {ns.cold} fresh `python -m ftplan.cli "
            f"plan` processes (interpreter start-up and imports included). Target: < {TARGET_SECONDS:g} s.",
            "",
            "| Model | Hardware | in-process wall (s) | in-process CPU (s) | fresh process wall (s) "
            "| fresh process CPU (s) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for model, hw, wall, cpu, cwall, ccpu in rows:
            lines.append(f"| {model} | {hw} | {wall:.3f} | {cpu:.3f} | {cwall:.3f} | {ccpu:.3f} |")
        lines += [
            "",
            f"Stages of the first case (CPU s, median): profile the data {parts['profile']:.3f}, "
            f"rules + estimates {parts['rules']:.3f}, render + validate + write {parts['render']:.3f}.",
        ]
        text = "\n".join(lines)
        print(text)
        if ns.markdown:
            Path(ns.markdown).write_text(text + "\n", encoding="utf-8")
        return 0 if all(r[5] < TARGET_SECONDS for r in rows) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""How long ``ftplan plan`` takes end to end: catalog model, a 10K-row dataset generated on the fly.

Two measurements, both of the real command (profile the file, estimate every strategy, decide, render,
validate, write the folder):

- ``in-process``: ``planner.cli.main([...])`` called repeatedly in one interpreter (the planner's own
  work, what the wizard pays per plan); median and max of ``--repeat`` runs after one warm-up.
- ``cold CLI``: ``python -m planner.cli plan ...`` in a fresh process (adds interpreter start-up and
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
    words = "the model learns to answer questions about data plans memory time cost tokens".split()
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            n_in, n_out = rng.randint(5, 120), rng.randint(10, 300)
            row = {"instruction": f"Task {i % 9000}: " + " ".join(rng.choice(words) for _ in range(n_in)),
                   "input": "", "output": " ".join(rng.choice(words) for _ in range(n_out))}
            fh.write(json.dumps(row) + "\n")


def args_for(model: str, gpu: str, gpus: int, task: str, data: Path, out: Path) -> list[str]:
    return ["plan", "--model", model, "--data", str(data), "--task", task, "--gpu", gpu, "--gpus", str(gpus),
            "--out", str(out), "--force"]


def in_process(argv: list[str], repeat: int) -> list[float]:
    from planner.cli import main

    times = []
    for i in range(repeat + 1):
        sink = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sink):
            rc = main(argv)
        dt = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"ftplan plan failed (rc={rc}): {' '.join(argv)}")
        if i:  # the first run pays the imports: reported by the cold CLI measurement instead
            times.append(dt)
    return times


def cold(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "planner.cli", *argv], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
    return times


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
            warm = in_process(argv, ns.repeat)
            fresh = cold(argv, ns.cold)
            rows.append((model, f"{gpus}x {gpu}", statistics.median(warm), max(warm), statistics.median(fresh)))
        lines = [
            f"`ftplan plan` on a {ns.rows:,}-row alpaca file ({data.stat().st_size / 1e6:.1f} MB), catalog models, "
            f"named GPUs; Python {platform.python_version()} on {platform.machine()} "
            f"({platform.processor() or 'cpu'}), median of {ns.repeat} in-process runs after a warm-up and of "
            f"{ns.cold} fresh `python -m planner.cli plan` processes. Target: < {TARGET_SECONDS:g} s.",
            "",
            "| Model | Hardware | in-process median (s) | in-process max (s) | cold CLI median (s) | < 1 s |",
            "|---|---|---:|---:|---:|---|",
        ]
        for model, hw, med, worst, fresh in rows:
            ok = "yes" if fresh < TARGET_SECONDS else ("in-process only" if med < TARGET_SECONDS else "no")
            lines.append(f"| {model} | {hw} | {med:.3f} | {worst:.3f} | {fresh:.3f} | {ok} |")
        text = "\n".join(lines)
        print(text)
        if ns.markdown:
            Path(ns.markdown).write_text(text + "\n", encoding="utf-8")
        return 0 if all(r[2] < TARGET_SECONDS for r in rows) else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

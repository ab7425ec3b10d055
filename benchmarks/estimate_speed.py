"""Cold start of ``ftplan estimate`` vs ``python -c "import torch"`` (hyperfine-style: N fresh processes
each, median and min wall time).

Run:  .venv/bin/python benchmarks/estimate_speed.py [--runs 10] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "ftplan estimate (one method, --json)": [
        "{ftplan}", "estimate", "--model", "meta-llama/Llama-3.1-8B", "--method", "qlora", "--gpu", "A100-80GB",
        "--seq-len", "2048", "--json",
    ],
    "ftplan estimate (all strategies, table)": [
        "{ftplan}", "estimate", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "A100-80GB", "--gpus", "8",
    ],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def _ftplan() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "ftplan")
    return local if os.path.exists(local) else (shutil.which("ftplan") or "ftplan")


def time_command(argv: list[str], runs: int) -> list[float]:
    times = []
    subprocess.run(argv, capture_output=True, check=True)  # warm the OS file cache once (hyperfine --warmup 1)
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--markdown", metavar="FILE")
    args = ap.parse_args(argv)
    rows = []
    for label, cmd in COMMANDS.items():
        cmd = [_ftplan() if c == "{ftplan}" else c for c in cmd]
        t = time_command(cmd, args.runs)
        rows.append((label, statistics.median(t), min(t), max(t)))
        print(f"{label:<45} median {rows[-1][1] * 1000:7.0f} ms  min {rows[-1][2] * 1000:7.0f} ms  "
              f"max {rows[-1][3] * 1000:7.0f} ms", flush=True)
    if args.markdown:
        lines = [
            "## Estimate speed",
            "",
            (f"Command: `python benchmarks/estimate_speed.py --runs {args.runs}` ({args.runs} cold processes per "
            "command after one warm-up, like `hyperfine --warmup 1`; shared 2-core CPU machine, so absolute "
            "times are noisy; the ratio is what matters)."),
            "",
            "| command | median | min | max |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| `{label}` | {med * 1000:.0f} ms | {lo * 1000:.0f} ms | {hi * 1000:.0f} ms |"
                  for label, med, lo, hi in rows]
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

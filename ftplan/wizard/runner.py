"""The Run step's plumbing (no Textual): the executor as a subprocess, and a tail of its metrics.jsonl.

The wizard runs exactly what the user would type (`ftplan run PLAN_DIR`, see
``WizardServices.run_argv``) in its own session so the terminal UI keeps its keys, and stops it with
SIGINT, which the executor turns into "checkpoint after this step, then exit"
(executor/callbacks.py: InterruptCallback). Progress comes from the records the executor appends to
``<plan>/<output_dir>/metrics.jsonl`` (executor/paths.py: RunPaths.metrics).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

OUTPUT_LINES = 200  # executor output kept for the log pane


def metrics_path(plan_dir: str | Path, output_dir: str) -> Path:
    """Same rule as executor.paths.RunPaths (kept import-free: the executor imports torch)."""
    out = Path(output_dir)
    return (out if out.is_absolute() else Path(plan_dir) / out) / "metrics.jsonl"


class MetricsTail:
    """Reads the complete new lines of a growing JSONL file on each call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1  # a line being written stays for the next call
        self._offset += end
        records = []
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records


class RunProcess:
    """One executor run: start, read its output, stop (SIGINT = checkpoint and exit), exit code."""

    def __init__(self, argv: list[str], cwd: str | Path | None = None) -> None:
        self.argv = argv
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._unread: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self.stop_requested = False

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            # tqdm redraws with \r: keep the latest state of the line.
            line = raw.rstrip("\n").split("\r")[-1]
            with self._lock:
                self.lines.append(line)
                self._unread.append(line)

    def drain(self, timeout: float = 2.0) -> None:
        """After exit: wait for the reader to reach the end of the output."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(timeout)

    def new_lines(self) -> list[str]:
        with self._lock:
            out = list(self._unread)
            self._unread.clear()
        return out

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGINT to the executor process only: it saves a checkpoint after the current step."""
        if self.running:
            self.stop_requested = True
            os.kill(self.proc.pid, signal.SIGINT)

    def kill(self) -> None:
        if self.running:
            os.killpg(self.proc.pid, signal.SIGKILL)

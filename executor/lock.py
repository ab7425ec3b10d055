"""One run per plan folder: a lock file holding the owner's host and PID.

Invariant: while a run trains into ``<output>/``, ``<output>/.ftplan-run.lock`` exists and names it; a
second ``ftplan run`` of the same folder refuses in one line naming the holder. The lock is created with
``O_CREAT | O_EXCL`` (atomic on POSIX and NFSv3+), removed when the run ends (normally, by exception or by
a signal that Python handles). A lock left by a process that died (SIGKILL, power loss) is stale: on the
same host a PID that no longer exists (or was reused by a process started after the lock was taken) is
cleared with a message; a lock from another host is only cleared by the user (we cannot see its
processes). Only the main process (RANK 0) of a distributed run takes it; the other ranks belong to it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from planner.errors import FtplanError

LOCK_NAME = ".ftplan-run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _started_after(pid: int, when: float) -> bool:
    """The process with this PID started after ``when`` (so it reused a dead owner's PID). Linux only."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(stat[19])  # field 22: start time in clock ticks since boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))  # fmt: skip
        return boot + ticks / os.sysconf("SC_CLK_TCK") > when + 1
    except (OSError, ValueError, IndexError, StopIteration):
        return False


class RunLock:
    """Context manager: ``with RunLock(output_dir): train()``."""

    def __init__(self, folder: Path, log=print):
        self.path = Path(folder) / LOCK_NAME
        self.log = log
        self.held = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True  # unreadable or half-written by a process that died while writing it
        return not _alive(pid) or _started_after(pid, float(holder.get("time", 0)))

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if self._stale(holder):
                    self.log(f"ftplan: clearing a stale run lock ({_who(holder)} is not running)")
                    self.path.unlink(missing_ok=True)
                    continue
                raise FtplanError(
                    f"{self.path.parent.parent}: another run is training this plan folder ({_who(holder)})",
                    hint=f"wait for it to finish, or stop it; if it is gone (another host), delete {self.path}",
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
            self.held = True
            return
        raise FtplanError(f"cannot take the run lock {self.path}", hint="delete it if no run is using the folder")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _who(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("time", 0)))
    return f"PID {holder.get('pid')} on {holder.get('host')}, since {since}"

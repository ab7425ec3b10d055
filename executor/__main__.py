"""``python -m executor run PLAN_DIR``: the per-process entry point that launch.sh starts (one per rank).

It always trains in this process (never re-execs launch.sh); errors are one line, exit code 2 (3 on
NaN/inf loss, 130 after Ctrl-C, 143 after SIGTERM). A rank started by a launcher dies with it: launchers
(torchrun's elastic agent, accelerate) start each rank in its own session, so `kill -9` of launch.sh's
process group would leave the ranks training into the folder (and a restart would be two runs at once).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

import click

from planner.errors import FtplanError

PR_SET_PDEATHSIG = 1  # linux/prctl.h: signal this process when its parent dies
# After the launcher is gone, a rank gets SIGTERM (it saves a checkpoint at the next step end, as for a
# scheduler's SIGTERM); one still alive this much later (blocked in a collective with a dead peer) is killed.
ORPHAN_GRACE_S = 60.0


def die_with_parent(grace: float = ORPHAN_GRACE_S) -> None:
    """SIGTERM when the launcher (parent) dies (Linux prctl), then SIGKILL after ``grace`` seconds."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog below still ends orphans
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        time.sleep(grace)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ftplan-orphan-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        click.echo("usage: python -m executor run PLAN_DIR", err=True)
        return 2
    if "LOCAL_RANK" in os.environ:  # started by a launcher (accelerate, torchrun, deepspeed)
        die_with_parent()
    from executor.entry import run_in_process

    try:
        return run_in_process(argv[1])
    except FtplanError as err:
        click.echo(f"ftplan: error: {err}", err=True)
        return err.exit_code
    except KeyboardInterrupt:
        click.echo("ftplan: interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``python -m executor run PLAN_DIR``: the per-process entry point that launch.sh starts (one per rank).

It always trains in this process (never re-execs launch.sh); errors are one line, exit code 2 (3 on
NaN/inf loss, 130 after Ctrl-C).
"""

from __future__ import annotations

import sys

import click

from planner.errors import FtplanError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "run":
        click.echo("usage: python -m executor run PLAN_DIR", err=True)
        return 2
    from executor.commands import run_in_process

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

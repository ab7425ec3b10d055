"""``ftplan launch PLAN_DIR --slurm|--sky``: write the plan's cluster or cloud submission file and print the
command that submits it. It never submits: the printed command is the user's to run (or to ``eval``).

stdout is the command alone (``eval "$(ftplan launch plans/x --slurm)"`` works); what was written and what
to know goes to stderr. Both files are rendered from plan.yaml by ``planner.render.write_launch_file``,
which first re-renders launch.sh and the accelerate/DeepSpeed configs so the job starts what plan.yaml says.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from planner.errors import FtplanError

EPILOG = """\b
Examples:
  ftplan launch plans/llama70b --slurm                       # writes slurm.sbatch, prints: cd ... && sbatch ...
  ftplan launch plans/llama70b --sky                         # writes sky.yaml, prints: cd ... && sky launch ...
  ftplan launch plans/llama70b --sky --bucket s3://my-bucket/llama70b   # outputs and checkpoints in a bucket
  eval "$(ftplan launch plans/llama70b --slurm)"             # submit what it printed
"""


def _rel(path: Path) -> str:
    """The plan folder as the user can type it from here (relative when it is below the cwd)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path.resolve())


def slurm_command(plan_dir: Path) -> str:
    return f"cd {shlex.quote(_rel(plan_dir))} && sbatch slurm.sbatch"


def sky_command(plan_dir: Path, cluster: str, environ=os.environ) -> str:
    """``sky launch`` with ``--secret NAME`` for each known secret set here: by name only, SkyPilot reads the
    value from this environment (never from a file, never printed)."""
    from planner.render import SECRET_ENV

    secrets = "".join(f" --secret {name}" for name in SECRET_ENV if environ.get(name))
    return f"cd {shlex.quote(_rel(plan_dir))} && sky launch -c {shlex.quote(cluster)}{secrets} sky.yaml"


@click.command(name="launch", epilog=EPILOG)
@click.argument("plan_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--slurm", "slurm", is_flag=True, help="Write slurm.sbatch and print the sbatch command.")
@click.option("--sky", "sky", is_flag=True, help="Write sky.yaml (SkyPilot) and print the sky launch command.")
@click.option("--bucket", metavar="URL",
              help="With --sky: output/ (checkpoints, final model) is this existing bucket, mounted on every node "
                   "(s3://, gs://, r2://, ...); without it outputs stay on the nodes' disks.")
@click.option("--cluster", "cluster", metavar="NAME",
              help="With --sky: the SkyPilot cluster name (default: ftplan-FOLDER).")
def command(plan_dir: Path, slurm: bool, sky: bool, bucket: str | None, cluster: str | None):
    """Write PLAN_DIR's Slurm job (--slurm) or SkyPilot task (--sky) from plan.yaml and print the command that
    submits it. Nothing is submitted: run the printed command yourself.

    Both start launch.sh once per node with the scheduler's node rank and head address; a run stopped by
    SIGTERM (pre-emption, time limit) saves a checkpoint and the next start resumes from it.
    """
    from planner.render import check_bucket, cluster_name, write_launch_file

    if slurm == sky:
        raise FtplanError("give exactly one of --slurm or --sky", hint="ftplan launch PLAN_DIR --slurm")
    if slurm and (bucket or cluster):
        raise FtplanError("--bucket and --cluster go with --sky", hint="drop them, or use --sky")
    if not (plan_dir / "plan.yaml").is_file():
        raise FtplanError(f"{plan_dir}: no plan.yaml here", hint="give a folder written by `ftplan plan --out`")
    if slurm:
        path = write_launch_file(plan_dir, "slurm")
        click.echo(f"ftplan: wrote {path} (nothing submitted); submit with:", err=True)
        click.echo(slurm_command(plan_dir))
        return
    if bucket:
        bucket = check_bucket(bucket)
    path = write_launch_file(plan_dir, "sky", bucket=bucket)
    _sky_notes(plan_dir, bucket)
    click.echo(f"ftplan: wrote {path} (nothing launched); launch with:", err=True)
    click.echo(sky_command(plan_dir, cluster or cluster_name(plan_dir)))


def _sky_notes(plan_dir: Path, bucket: str | None) -> None:
    """What the user should know before launching: a substituted GPU, where the outputs go."""
    from planner.plan import load_plan
    from planner.render import launch_info, sky_accelerator

    plan = load_plan(plan_dir)
    note = sky_accelerator(plan).note
    if note:
        click.echo(f"ftplan: {note}", err=True)
    if bucket:
        click.echo(f"ftplan: outputs and checkpoints go to {bucket} (mounted at the plan's output/)", err=True)
    elif launch_info(plan).nodes > 1:
        click.echo(
            "ftplan: warning: a multi-node run without --bucket keeps each node's checkpoint shards on that node; "
            "resuming on new nodes needs them all: pass --bucket URL",
            err=True,
        )
    else:
        click.echo("ftplan: outputs stay on the node (~/sky_workdir/output); pass --bucket URL to keep them", err=True)

"""``ftplan run``, ``ftplan go``, ``ftplan chat``, ``ftplan generate``: the commands that train or use a model.

Thin shells: each parses its options, calls one executor/planner function and prints the result.
ftplan/cli.py's LazyGroup finds them as ``{name}_command``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from executor.entry import run_in_process
from ftplan.commands.plan import plan_and_write, plan_options, summary
from planner.errors import FtplanError


def needs_launcher(plan) -> bool:
    """The plan's launch.sh starts a distributed launcher (several processes, DeepSpeed, FSDP).

    Same rule as the one that renders launch.sh (planner.render.launch_info), so the two agree.
    """
    from planner.render import launch_info

    return launch_info(plan).multi_process


def _exec_launch(plan_dir: Path) -> None:
    launch = plan_dir / "launch.sh"
    if not launch.is_file():
        raise FtplanError(
            f"{launch}: missing; this plan needs several processes",
            hint="re-render the plan folder with `ftplan plan ... --out DIR`",
        )
    click.echo(f"ftplan: multi-process plan: exec {launch}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp("bash", ["bash", str(launch)])


@click.command("run")
@click.argument("plan_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--allow-data-change", is_flag=True,
              help="Train even if the data file changed since planning (its sha256 differs from plan.yaml's).")
def run_command(plan_dir: Path, allow_data_change: bool):
    """Train the plan in PLAN_DIR; resumes from the last complete checkpoint.

    Ctrl-C or SIGTERM (Slurm, Kubernetes, spot pre-emption) saves a checkpoint at the end of the current
    step and exits 130 / 143; running the same command again resumes. One run per plan folder at a time.

    \b
    Examples:
      ftplan run plans/qwen
      ftplan run plans/qwen     # again after a crash, Ctrl-C or SIGTERM: resumes
    """
    from planner.plan import load_plan

    plan = load_plan(plan_dir)
    if allow_data_change:
        os.environ["FTPLAN_ALLOW_DATA_CHANGE"] = "1"  # launched ranks inherit it
    if needs_launcher(plan) and "WORLD_SIZE" not in os.environ:
        _exec_launch(plan_dir)
    code = run_in_process(plan_dir, allow_data_change)
    if code:
        raise click.exceptions.Exit(code)  # ftplan.cli.main returns it as the exit status


@click.command("go")
@plan_options
@click.option("--yes", "-y", is_flag=True, help="Run without asking for confirmation.")
def go_command(yes, **options):
    """Plan (as `ftplan plan`), show the summary, confirm, then run (as `ftplan run`), in one shot.

    \b
    Examples:
      ftplan go --model ./tiny --data examples/data/dates.jsonl --task sft --out plans/dates --yes
      ftplan go --model Qwen/Qwen2.5-0.5B --data chat.jsonl --task chat --gpu RTX-4090 --out plans/q
      ftplan go --model ./tiny --data train.jsonl --task sft --cpu-processes 2 --yes   # 2 ranks on CPU (gloo)
    """
    result, folder = plan_and_write(**options)
    folder = Path(folder)
    click.echo(summary(result, folder))
    if not yes and not click.confirm("Run this plan now?", default=True):
        click.echo(f"Not run. Review {folder}/REPORT.md, then: ftplan run {folder}")
        return
    if needs_launcher(result.plan) and "WORLD_SIZE" not in os.environ:
        _exec_launch(folder)
    code = run_in_process(folder)
    if code:
        raise click.exceptions.Exit(code)  # ftplan.cli.main returns it as the exit status


@click.command("chat")
@click.argument("plan_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--system", default=None, help="System prompt.")
def chat_command(plan_dir, max_new_tokens, temperature, system):
    """Chat with the trained model of PLAN_DIR (the tokenizer's chat template). Empty line or /exit quits;
    /reset clears the history.

    \b
    Example:
      ftplan chat plans/qwen
    """
    from executor.inference import load_trained, reply

    model, tokenizer = load_trained(plan_dir)
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    click.echo("ftplan chat: empty line or /exit to quit, /reset to clear the history")
    while True:
        try:
            text = click.prompt("you", default="", show_default=False)
        except (EOFError, click.exceptions.Abort):
            break
        if text.strip() in ("", "/exit", "/quit"):
            break
        if text.strip() == "/reset":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": text})
        answer = reply(model, tokenizer, history, max_new_tokens, temperature)
        history.append({"role": "assistant", "content": answer})
        click.echo(f"model> {answer}")


@click.command("generate")
@click.argument("plan_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--prompt", required=True, help="The user message.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
def generate_command(plan_dir, prompt, max_new_tokens, temperature):
    """Generate one answer from the trained model of PLAN_DIR.

    \b
    Example:
      ftplan generate plans/dates --prompt "Write 2024-03-05 as a date in words." --max-new-tokens 16
    """
    from executor.inference import load_trained, reply

    model, tokenizer = load_trained(plan_dir)
    click.echo(reply(model, tokenizer, [{"role": "user", "content": prompt}], max_new_tokens, temperature))

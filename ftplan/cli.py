"""The ``ftplan`` command: a thin shell over the planner and executor APIs.

Subcommands live one per module (``ftplan/commands/*.py``, ``ftplan/commands/run.py``) and are
imported only when invoked, so ``ftplan estimate`` never pays for torch and ``ftplan --help`` is
instant. Every :class:`~planner.errors.FtplanError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from planner import __version__
from planner.errors import FtplanError

# name -> (module, short help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("ftplan.commands.models", "List the built-in model catalog (plans offline)."),
    "hardware": ("ftplan.commands.hardware", "Show the detected or named GPUs (pynvml probe, GPU catalog)."),
    "profile": ("ftplan.commands.profile", "Profile a dataset: format, rows, token lengths, bad rows."),
    "estimate": ("ftplan.commands.estimate", "VRAM per GPU, time and cost of every strategy."),
    "plan": ("ftplan.commands.plan", "Decide every setting and write a reviewable plan folder."),
    "run": ("ftplan.commands.run", "Train a plan folder (resumes automatically)."),
    "go": ("ftplan.commands.run", "Plan, confirm and run in one shot."),
    "chat": ("ftplan.commands.run", "Chat with a trained plan's model."),
    "generate": ("ftplan.commands.run", "Generate a completion from a trained plan's model."),
    "launch": ("ftplan.commands.launch", "Write a plan's Slurm job or SkyPilot task; print the submit command."),
    "export": ("ftplan.commands.export", "Export a plan: merged model, or an axolotl/LLaMA-Factory config."),
    "wizard": ("ftplan.commands.wizard", "Terminal wizard: from nothing to a reviewed plan."),
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or its --help is asked)."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, short = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an optional extra is missing
            return _missing_extra(name, short, exc)
        cmd = getattr(module, f"{name}_command", None) or module.command
        return cmd

    def format_commands(self, ctx, formatter):
        # Short help from the table: listing must not import every module (torch for run/go).
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing_extra(name: str, short: str, exc: ModuleNotFoundError) -> click.Command:
    @click.command(name=name, help=short, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args):
        raise FtplanError(
            f"'ftplan {name}' needs the package '{exc.name}', which is not installed",
            hint="pip install 'ftplan[all]' -c constraints.txt",
        )

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ftplan")
def cli():
    """ftplan: plan, estimate and run LLM fine-tuning before you spend a GPU-hour.

    \b
    Examples:
      ftplan estimate --model meta-llama/Llama-3.1-8B --gpu RTX-4090
      ftplan profile examples/data/dates.jsonl
      ftplan plan --model Qwen/Qwen2.5-0.5B --data train.jsonl --task sft --out plans/qwen
      ftplan run plans/qwen
      ftplan go --model ./my-model --data train.jsonl --task chat --yes
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI, turning FtplanError into a one-line message and exit code 2."""
    try:
        # standalone_mode=False: click returns (not raises) an Exit's code; commands use it for 130/143.
        code = cli.main(args=argv, prog_name="ftplan", standalone_mode=False)
        if isinstance(code, int):
            return code
    except FtplanError as err:
        click.echo(f"ftplan: error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("ftplan: aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("ftplan: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

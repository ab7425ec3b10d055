"""``ftplan wizard``: the Textual terminal wizard, from nothing to a reviewed plan (and its run)."""

from __future__ import annotations

from dataclasses import replace

import click

from planner.errors import FtplanError
from planner.vocab import TASKS

EPILOG = """\b
Examples:
  ftplan wizard
  ftplan wizard --model Qwen/Qwen2.5-0.5B --data train.jsonl
  ftplan wizard --gpu A100-80GB --gpus 2 --out plans/qwen
\b
Keys: Ctrl+N next, Esc back, Tab moves between fields, Ctrl+Q quits.
Needs the wizard extra: pip install 'ftplan[wizard]'.
"""


@click.command(name="wizard", epilog=EPILOG)
@click.option("--model", metavar="M", help="Start with this model (catalog name, hub id or local folder).")
@click.option("--data", metavar="FILE", help="Start with this dataset file.")
@click.option("--task", type=click.Choice(TASKS),
              help="Start with this task (default: from the data format).")
@click.option("--gpu", metavar="NAME", help="Plan for this catalog GPU instead of the detected one.")
@click.option("--gpus", type=int, metavar="N", help="GPU count (with --gpu).")
@click.option("--out", metavar="DIR", help="Plan folder to write (default: plans/<model>).")
def command(model, data, task, gpu, gpus, out):
    """Terminal wizard: from nothing to a reviewed plan."""
    try:
        from ftplan.wizard.app import WizardApp
    except ModuleNotFoundError as exc:
        raise FtplanError(f"'ftplan wizard' needs the package '{exc.name}', which is not installed",
                          hint="pip install 'ftplan[wizard]'") from None
    from ftplan.wizard import WizardAnswers, WizardServices

    services = WizardServices()
    answers = WizardAnswers(model=model or "", data=data or "", task=task or "", out_dir=out or "")
    if gpu:  # resolve now: a bad --gpu is a one-line error before the screen opens
        hw = services.resolve_hardware(gpu, gpus, None, None)
        answers = replace(answers, gpu=hw.gpu.name, gpus=hw.count, hardware=hw)
    elif gpus:
        raise FtplanError("--gpus needs --gpu", hint="e.g. --gpu A100-80GB --gpus 2")
    app = WizardApp(services, answers)
    plan = app.run()
    if plan is None:
        click.echo("ftplan wizard: closed, nothing written")
        return
    folder = app.answers.out_dir
    click.echo(f"plan written to {folder}: {plan.strategy.method}, {plan.estimate.time_hours:.2f} h, "
               f"${plan.estimate.cost_usd:.2f}")
    if not app.answers.run_now:
        click.echo(f"next: review {folder}/REPORT.md, then `ftplan run {folder}`")

"""``ftplan profile DATA``: record format, row counts, bad rows and token lengths of a dataset."""

from __future__ import annotations

import json
import os

import click

from planner.dataset import DataProfile, TemplateFixes, profile_data
from planner.dataset.chat import SYSTEM_TURN_CHOICES
from planner.errors import FtplanError

EPILOG = """\b
Examples:
  ftplan profile train.jsonl
  ftplan profile train.jsonl --model ./my-model          # exact counts with the model's tokenizer.json
  ftplan profile data.parquet --model Qwen/Qwen2.5-0.5B  # local HF cache tokenizer, else heuristic
  ftplan profile prefs.json --task preference --json
  ftplan profile big.jsonl --max-rows 100000             # a quick look at the first rows
  ftplan profile intents.csv --task classification --columns label=intent
  ftplan profile chats.jsonl --model ./gemma-local --system-turn merge   # template without a system role
"""

SHOWN_INVALID = 5  # invalid rows listed in the table (all of them are in --json, up to 50)


@click.command(name="profile", epilog=EPILOG)
@click.argument("data")
@click.option(
    "--model", metavar="M", help="Model (local folder, hub id or catalog name) whose tokenizer counts tokens."
)
@click.option("--tokenizer", "tokenizer", metavar="PATH", help="A tokenizer.json (or a folder holding one).")
@click.option(
    "--task",
    metavar="T",
    help="sft | chat | continued-pretraining | classification | preference "
    "(breaks ties when the data fits several formats).",
)
@click.option("--max-rows", type=int, metavar="N", help="Profile only the first N rows (a sample).")
@click.option("--columns", metavar="NAME=COL,...",
              help="Map file columns to the names ftplan reads, e.g. label=category,prompt=question.")
@click.option("--system-turn", type=click.Choice(SYSTEM_TURN_CHOICES), default="keep", show_default=True,
              help="For chat templates without a system role: merge it into the first user turn, or drop it.")
@click.option("--merge-consecutive", is_flag=True, help="Join consecutive turns of the same role.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(data, model, tokenizer, task, max_rows, columns, system_turn, merge_consecutive, as_json):
    """Profile a dataset: format, rows, token lengths, bad rows, and (with a local --model) every row
    rendered by the model's chat template and tokenized exactly as training will."""
    vocab_size, model_type, notes = None, None, []
    if model and not tokenizer:
        tokenizer, vocab_size, model_type, notes = _model_tokenizer(model)
    prof = profile_data(
        data,
        tokenizer_path=tokenizer,
        task=task,
        max_rows=max_rows,
        vocab_size=vocab_size,
        columns=columns,
        fixes=TemplateFixes(system_turn, merge_consecutive),
        model_type=model_type,
    )
    if notes:
        from dataclasses import replace

        prof = replace(prof, notes=tuple(notes) + prof.notes)
    if as_json:
        click.echo(json.dumps(prof.to_dict(), indent=2))
    else:
        _print_profile(prof)
    if prof.valid_rows == 0:
        first = f"; line {prof.invalid[0].line}: {prof.invalid[0].reason}" if prof.invalid else ""
        fix = f"re-run with {prof.suggested_fix}" if prof.suggested_fix else None
        raise FtplanError(f"{data}: none of the {prof.rows} rows is a valid {prof.format} example{first}", hint=fix)


def _model_tokenizer(model: str) -> tuple[str | None, int | None, str | None, list[str]]:
    """(tokenizer path, vocab size, model_type, notes) for --model: a local folder directly, else the spec."""
    if os.path.isdir(model):
        vocab = model_type = None
        config = os.path.join(model, "config.json")
        if os.path.isfile(config):
            try:
                with open(config, encoding="utf-8") as f:
                    cfg = json.load(f)
                vocab, model_type = cfg.get("vocab_size"), cfg.get("model_type")
            except (OSError, ValueError):
                pass
        if os.path.isfile(os.path.join(model, "tokenizer.json")):
            return model, vocab, model_type, []
        return None, vocab, model_type, [f"{model} has no tokenizer.json: heuristic token counts"]
    from planner.model_spec import load_model_spec  # lazy: the catalog is only needed with --model

    spec = load_model_spec(model)
    if spec.tokenizer_path:
        return spec.tokenizer_path, spec.vocab_size, spec.model_type, []
    note = f"no local tokenizer for {model}: heuristic token counts for its {spec.vocab_size:,}-token vocabulary"
    return None, spec.vocab_size, spec.model_type, [note]


def _print_profile(p: DataProfile) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        show_header=False, box=None, pad_edge=False, title=f"[bold]{p.path}[/bold]", title_justify="left"
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    size = f"{p.size_bytes / 1e6:.1f} MB" if p.size_bytes >= 1e5 else f"{p.size_bytes:,} bytes"
    table.add_row("file", f"{p.file_format}, {size}, sha256 {p.sha256[:16]}...")
    if p.columns:
        table.add_row("columns", ", ".join(f"{k}={v}" for k, v in p.columns.items()))
    table.add_row("format", f"{p.format}  [dim](fields: {', '.join(p.fields[:10])})[/dim]")
    table.add_row("rows", f"{p.rows:,}" + (" (sample: --max-rows)" if p.truncated else ""))
    table.add_row("valid", f"{p.valid_rows:,}")
    table.add_row(
        "duplicates", f"{p.duplicates:,}" + (" [yellow](exact copies)[/yellow]" if p.duplicates else "")
    )
    table.add_row("empty", f"{p.empty_rows:,}")
    style = "red" if p.invalid_count else ""
    table.add_row("invalid", f"[{style}]{p.invalid_count:,}[/{style}]" if style else "0")
    for bad in p.invalid[:SHOWN_INVALID]:
        table.add_row("", f"line {bad.line}: {bad.reason}")
    if p.invalid_count > SHOWN_INVALID:
        table.add_row("", f"... and {p.invalid_count - SHOWN_INVALID:,} more (--json lists up to 50)")
    if p.valid_rows:
        table.add_row(
            "tokens / example",
            f"p50 {p.tokens_p50:,}  p95 {p.tokens_p95:,}  p99 {p.tokens_p99:,}  "
            f"max {p.tokens_max:,}  mean {p.tokens_mean:,.1f}",
        )
        table.add_row("response tokens", f"mean {p.response_tokens_mean:,.1f}")
        total = f"{p.total_tokens:,}"
        if p.sequences_per_row > 1:
            total += f" (x{p.sequences_per_row} sequences per row: chosen and rejected)"
        table.add_row("total tokens", total)
    table.add_row("tokenizer", p.tokenizer + (f" · chat template: {p.template}" if p.template else ""))
    if p.template_refusals:
        fix = f" [bold](fix: {p.suggested_fix})[/bold]" if p.suggested_fix else ""
        table.add_row("template", f"[red]refuses {p.template_refusals:,} rows[/red]; {p.template_refusal}{fix}")
    for kind, n in p.skipped.items():
        table.add_row("skipped", f"{n:,} rows: {kind}")
    if p.label_counts:
        labels = ", ".join(f"{k}: {v:,}" for k, v in list(p.label_counts.items())[:10])
        more = f" (+{len(p.label_counts) - 10} more)" if len(p.label_counts) > 10 else ""
        table.add_row("labels", labels + more)
    console.print(table)
    for note in p.notes:
        console.print(f"[dim]note: {note}[/dim]", highlight=False)

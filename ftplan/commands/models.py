"""``ftplan models``: list the built-in model catalog (architecture data, no weights)."""

from __future__ import annotations

import json

import click

from planner.model_spec import catalog, catalog_spec


def _billions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


@click.command(name="models")
@click.argument("search", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per model.")
def command(search: str | None, as_json: bool):
    """List the built-in catalog of models that plan offline.

    \b
    Examples:
      ftplan models
      ftplan models qwen
      ftplan models llama --json
    """
    rows = []
    for hub_id, entry in catalog().items():
        names = (hub_id, *entry.get("aliases", ()))
        if search and not any(search.lower() in n.lower() for n in names):
            continue
        spec = catalog_spec(hub_id)
        rows.append(
            {
                "model": hub_id,
                "model_type": spec.model_type,
                "params": spec.total_params,
                "active_params": spec.active_params,
                "layers": spec.num_layers,
                "hidden_size": spec.hidden_size,
                "vocab_size": spec.vocab_size,
                "max_position_embeddings": spec.max_position_embeddings,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    # Every hub id stays readable in full: in a narrow terminal the architecture details (hidden, vocab,
    # context) are left out (--json has them) rather than letting rich cut the names with an ellipsis.
    wide = console.width >= 110
    cols = ("model", "type", "params", "layers") + (("hidden", "vocab", "context") if wide else ())
    table = Table(title=f"ftplan model catalog ({len(rows)} models)")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "type") else "right",
                         no_wrap=col == "model", overflow="fold")
    for r in rows:
        params = _billions(r["params"])
        if r["active_params"] != r["params"]:
            params += f" ({_billions(r['active_params'])} active)"
        cells = [r["model"], r["model_type"], params, str(r["layers"])]
        if wide:
            cells += [str(r["hidden_size"]), str(r["vocab_size"]), str(r["max_position_embeddings"])]
        table.add_row(*cells)
    if not wide:
        table.caption = "hidden size, vocabulary and context: widen the terminal or use --json"
    console.print(table)

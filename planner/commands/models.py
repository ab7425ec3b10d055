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

    table = Table(title=f"ftplan model catalog ({len(rows)} models)")
    for col in ("model", "type", "params", "layers", "hidden", "vocab", "context"):
        table.add_column(col, justify="left" if col in ("model", "type") else "right")
    for r in rows:
        params = _billions(r["params"])
        if r["active_params"] != r["params"]:
            params += f" ({_billions(r['active_params'])} active)"
        table.add_row(
            r["model"], r["model_type"], params, str(r["layers"]), str(r["hidden_size"]),
            str(r["vocab_size"]), str(r["max_position_embeddings"]),
        )
    Console().print(table)

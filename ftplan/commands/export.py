"""``ftplan export PLAN_DIR``: hand a plan or its trained result on.

Two jobs, one command:
- ``--merged OUT``: the trained LoRA/QLoRA adapter merged into its base and saved as a standalone model
  (sharded safetensors, tokenizer, chat template, model card). Implemented in ``executor.merge``.
- ``--to axolotl|llama-factory``: a config for that trainer carrying every decision of the plan.
  Implemented in ``planner.interop``.
"""

from __future__ import annotations

import click

from planner.errors import FtplanError

EPILOG = """\b
Examples:
  ftplan export plans/qwen --merged merged/qwen          # adapter merged into the base
  ftplan export plans/qwen --to axolotl --out qwen.yml   # an axolotl config of the plan
  ftplan export plans/qwen --to llama-factory            # LLaMA-Factory config + dataset_info.json
"""


@click.command(name="export", epilog=EPILOG)
@click.argument("plan_dir", type=click.Path(file_okay=False))
@click.option("--merged", "merged_out", metavar="OUT", help="Merge the trained adapter into the base, save to OUT.")
@click.option("--push-to-hub", "push_repo", metavar="REPO",
              help="With --merged: also upload to this hub repo (token from HF_TOKEN only).")
@click.option("--max-shard-size", metavar="SIZE", help="With --merged: largest safetensors shard (default 5GB).")
@click.option("--to", "to", type=click.Choice(["axolotl", "llama-factory"]), help="Write a config for this trainer.")
@click.option("--out", "out", metavar="FILE", help="With --to: where to write the config (default: in PLAN_DIR).")
def command(plan_dir, merged_out, push_repo, max_shard_size, to, out):
    """Export a plan: its merged model (--merged) or a config for another trainer (--to)."""
    if bool(merged_out) == bool(to):
        raise FtplanError("give exactly one of --merged OUT or --to axolotl|llama-factory",
                          hint="ftplan export PLAN_DIR --merged OUT")
    if merged_out:
        from executor.merge import export_merged  # torch: only when merging

        export_merged(plan_dir, merged_out, push_repo=push_repo, log=click.echo,
                      **({"max_shard_size": max_shard_size} if max_shard_size else {}))
        return
    if push_repo or max_shard_size:
        flag = "--push-to-hub" if push_repo else "--max-shard-size"
        raise FtplanError(f"{flag} goes with --merged", hint=f"drop {flag}")
    from planner.interop import export_config

    for path in export_config(plan_dir, to, out):
        click.echo(f"wrote {path}")

"""``ftplan plan``: decide every setting (planner.rules) and write a reviewable plan folder
(planner.render). Pure planner: no torch/transformers import, answers in well under a second."""

from __future__ import annotations

import click

from planner.dataset.chat import SYSTEM_TURN_CHOICES
from planner.errors import FtplanError
from planner.units import GIB, gib
from planner.vocab import TASKS

EPILOG = """\b
Examples:
  ftplan plan --model Qwen/Qwen2.5-0.5B --data train.jsonl --task sft --out plans/qwen
  ftplan plan --model meta-llama/Llama-3.1-8B --data chats.jsonl --task chat --gpu RTX-4090 --goal cost
  ftplan plan --model meta-llama/Llama-3.1-70B --data big.jsonl --task sft --gpu H100-SXM --gpus 8 \\
      --max-hours 12 --out plans/llama70
  ftplan plan --model ./my-model --data docs.jsonl --task continued-pretraining \\
      --general-data general.jsonl --set training.lr=1e-5 --set lora.r=64 --out plans/domain
  ftplan plan --model ./gemma --data chats.jsonl --task chat --system-turn merge   # no system role
  ftplan plan --model ./m --data intents.csv --task classification --columns text=utterance,label=intent
  ftplan plan --model ./m --data train.jsonl --task sft --tracking tensorboard,mlflow   # + MLflow, local store
  ftplan plan --config lora.yml --data train.jsonl --gpu RTX-4090 --out plans/from-axolotl
  ftplan plan --model ./m --data train.jsonl --task sft --cpu-processes 2 \
      --set strategy.method=full --set strategy.distribution=zero2   # 2 ranks on this CPU (gloo)
  ftplan plan --model ./m --data train.jsonl --task sft --cpu-processes 1 --nodes 2 --out plans/cpu2n
      # then on each node: NODE_RANK=0|1 MASTER_ADDR=<node 0> bash plans/cpu2n/launch.sh
"""



_OPTIONS = [
    click.option("--model", metavar="ID|PATH",
                 help="Hub id, catalog name or local model folder (default with --config: the config's)."),
    click.option("--data", required=True, metavar="FILE",
                 help="Training data: jsonl, json, csv, tsv, parquet or txt, optionally .gz/.bz2/.xz/.zst."),
    click.option("--task", type=click.Choice(TASKS), help="What to train (default with --config: the config's)."),
    click.option("--config", metavar="FILE",
                 help="An axolotl or LLaMA-Factory config: its settings win over the rules; REPORT.md reviews it."),
    click.option("--config-format", type=click.Choice(["axolotl", "llama-factory"]),
                 help="With --config: its format (default: recognised from its keys)."),
    click.option("--accelerate-config", metavar="FILE",
                 help="With --config: the accelerate config it is launched with (FSDP, process count)."),
    click.option("--gpu", metavar="NAME", help="GPU type from the catalog (default: the detected GPU)."),
    click.option("--gpus", type=int, metavar="N", help="GPUs per node (default: detected, or 1 with --gpu)."),
    click.option("--nodes", type=int, default=1, show_default=True, metavar="N",
                 help="Machines with --gpus GPUs (or --cpu-processes processes) each; launch.sh then runs on "
                 "every node."),
    click.option("--cpu-processes", type=int, metavar="N",
                 help="Plan a CPU run of N training processes per node (gloo: DDP, or DeepSpeed ZeRO with "
                 "--set strategy.distribution=zero1|zero2|zero3), even where a GPU is present. Not with "
                 "--gpu/--gpus/--gpu-memory."),
    click.option("--gpu-memory", type=float, metavar="GB", help="Usable memory per GPU."),
    click.option("--price", type=float, metavar="USD", help="Price per GPU-hour (overrides the catalog)."),
    click.option("--goal", type=click.Choice(["quality", "balanced", "cost"]), default="balanced",
                 show_default=True),
    click.option("--max-hours", type=float, metavar="H", help="Time budget; the plan says if it cannot be met."),
    click.option("--max-cost", type=float, metavar="USD", help="Money budget; the plan says if it cannot be met."),
    click.option("--general-data", metavar="FILE", help="General corpus: 80/20 replay and a forgetting check."),
    click.option("--columns", metavar="NAME=COL,...",
                 help="Map file columns to the names ftplan reads, e.g. label=category,prompt=question."),
    click.option("--system-turn", type=click.Choice(SYSTEM_TURN_CHOICES), default="keep", show_default=True,
                 help="For chat templates without a system role: merge the system text into the first user "
                 "turn, or drop it."),
    click.option("--merge-consecutive", is_flag=True,
                 help="Join consecutive turns of the same role (templates that demand strict alternation)."),
    click.option("--tracking", metavar="BACKENDS",
                 help="Experiment trackers, a comma list of tensorboard, mlflow, wandb, or none "
                 "(default: tensorboard). W&B runs offline unless tracking.wandb_mode is online."),
    click.option("--mlflow-uri", metavar="URI",
                 help="MLflow tracking server or database (default: a local store in <out>/output/mlruns). "
                 "No credentials: MLflow reads MLFLOW_TRACKING_TOKEN etc. from the environment."),
    click.option("--out", "out_dir", default="plan", show_default=True, metavar="DIR",
                 help="Plan folder to write."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="Override any plan.yaml field by dotted path (repeatable), e.g. training.lr=1e-4."),
    click.option("--trust-remote-code", is_flag=True,
                 help="Allow the model's own code (only for models you trust)."),
    click.option("--force", is_flag=True, help="Replace the plan files in an existing, non-empty --out folder."),
]


def plan_options(func):
    """The options of `ftplan plan`, shared by `ftplan go` so the two never drift apart."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def plan_and_write(*, model, data, task, gpu, gpus, nodes, gpu_memory, price, goal, max_hours, max_cost,
                   general_data, out_dir, sets, trust_remote_code, force, columns=None, system_turn="keep",
                   merge_consecutive=False, tracking=None, mlflow_uri=None, config=None, config_format=None,
                   accelerate_config=None, cpu_processes=None):
    """Validate the options, decide the plan and write its folder; returns (PlanResult, folder)."""
    from planner.dataset.layouts import parse_columns
    from planner.plan import parse_set_options, tracking_uri_problem
    from planner.render import check_out_dir, write_plan_folder
    from planner.request import PlanRequest
    from planner.rules import make_plan
    from planner.rules.evaluation import disk_warning
    from planner.rules.tracking import missing_message, missing_packages, parse_backends

    for flag, value in (("--max-hours", max_hours), ("--max-cost", max_cost)):
        if value is not None and not value > 0:
            raise FtplanError(f"{flag} must be positive, got {value:g}")
    backends = parse_backends(tracking)
    if mlflow_uri is not None and backends is not None and "mlflow" not in backends:
        raise FtplanError("--mlflow-uri: only used with --tracking ...,mlflow", hint="add mlflow to --tracking")
    if mlflow_uri is not None and backends is None:
        backends = ("tensorboard", "mlflow")  # a tracking URI says where MLflow runs go: it implies MLflow
    problem = tracking_uri_problem(mlflow_uri)
    if problem:
        raise FtplanError(f"--mlflow-uri: {problem}")  # before any work (and never echoing the URI)
    check_out_dir(out_dir, force)  # fail before any work
    user_sets, config_import, hardware = parse_set_options(sets), None, None
    if config:  # an axolotl / LLaMA-Factory config: its settings as --set values (planner.interop.review)
        from planner.interop.review import config_for_plan, set_options

        config_import, hardware = config_for_plan(config, config_format, accelerate_config, gpu=gpu, gpus=gpus,
                                                  nodes=nodes, gpu_memory=gpu_memory, price=price)
        model, task = model or config_import.model, task or config_import.task
    elif config_format or accelerate_config:
        raise FtplanError("--config-format/--accelerate-config go with --config FILE")
    if config and cpu_processes is not None:
        raise FtplanError("--cpu-processes: not with --config (its hardware comes from --gpu/--gpus there)",
                          hint="drop --config, or plan a CPU run with --set hardware.gpu=null --set hardware.count=N")
    if not model or not task:
        raise FtplanError("--model and --task are required (or --config FILE)", hint="see ftplan plan --help")
    request = PlanRequest(
        model=model,
        data=data,
        task=task,
        goal=goal,
        gpu=gpu,
        gpus=gpus,
        gpu_memory_gib=gpu_memory,
        price_per_hour=price,
        max_hours=max_hours,
        max_cost=max_cost,
        general_data=general_data,
        overrides={**(set_options(config_import) if config_import else {}), **user_sets},
        trust_remote_code=trust_remote_code,
        nodes=nodes,
        cpu_processes=cpu_processes,
        columns=parse_columns(columns),
        system_turn=system_turn,
        merge_consecutive=merge_consecutive,
        tracking=backends,
        mlflow_uri=mlflow_uri,
    )
    if config_import:
        from planner.interop.review import plan_with_config

        result = plan_with_config(request, config_import, hardware, user_sets)
    else:
        result = make_plan(request)
    warning = disk_warning(result.plan, _free_bytes(out_dir))
    if warning:
        result.plan.warnings.append(warning)
    missing = missing_packages(result.plan.tracking)
    if missing:  # planning needs no tracker; `ftplan run` refuses to start without it
        result.plan.warnings.append(missing_message(missing) + " (`ftplan run` needs it)")
    return result, write_plan_folder(result, out_dir, force=force)


def _free_bytes(path) -> int:
    """Free bytes on the disk that will hold ``path`` (its nearest existing parent)."""
    import os
    import shutil

    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return shutil.disk_usage(p).free


@click.command(name="plan", epilog=EPILOG)
@plan_options
def command(**options):
    """Decide strategy, precision, batch, learning rate, LoRA shape, evaluation and budget, each with its
    reason, and write plan.yaml, launch.sh, accelerate/DeepSpeed configs and REPORT.md to --out."""
    result, folder = plan_and_write(**options)
    click.echo(summary(result, folder))


def summary(result, folder) -> str:
    """The few lines a user needs before opening REPORT.md."""
    from planner.render import _hours, _usd

    p = result.plan
    from planner.plan import world_size

    hw = f"{p.hardware.count * p.hardware.nodes}x {p.hardware.gpu}" if p.hardware.gpu else "CPU"
    if not p.hardware.gpu and world_size(p) > 1:
        hw += f", {world_size(p)} processes ({p.hardware.count} per node x {p.hardware.nodes} node(s))"
    strat = p.strategy.method + (
        "" if p.strategy.distribution == "single" else f" + {p.strategy.distribution}"
    )
    if p.strategy.offload_optimizer or p.strategy.offload_params:
        strat += " + CPU offload"
    e = p.estimate
    ckpt = ", grad ckpt" if p.strategy.gradient_checkpointing else ""
    lines = [
        f"plan: {p.model.name_or_path} · {p.task} · {hw}",
        f"  strategy   {strat} ({p.strategy.precision}{ckpt})",
        f"  memory     {gib(e.total)} {'per GPU' if p.hardware.gpu else 'host RAM'} ({e.verdict})"
        + (f" of {gib(p.hardware.memory_gib * GIB)}" if p.hardware.gpu else ""),
        f"  batch      {p.training.micro_batch} x {p.training.grad_accum} accum, seq {p.training.seq_len}, "
        f"lr {p.training.lr:g}, {p.training.epochs:g} epoch(s), {e.steps} steps",
        f"  time/cost  {_hours(e.time_hours)}, {_usd(e.cost_usd)}",
    ]
    for w in p.warnings:
        lines.append(f"  warning    {w}")
    for a in result.advice:
        if a.verdict != "fine-tune":  # 'fine-tuning suits this task' is left to REPORT.md
            lines.append(f"  advice     {a.verdict}: {a.message}")
    lines.append(f"wrote {folder}/ (plan.yaml, launch.sh, REPORT.md); run: bash {folder}/launch.sh")
    return "\n".join(lines)

"""Render a PlanResult into a reviewable plan folder (plan.yaml, launch.sh, accelerate/DeepSpeed
configs, REPORT.md) from ``templates/*.j2``.

One Jinja Environment with StrictUndefined (a missing value is an error, never an empty string),
autoescape off (these are shell/YAML/JSON/Markdown files, not HTML), and a ``shquote`` filter for
every value that reaches a shell. The folder is written atomically: everything is rendered into a
temporary folder beside the target, validated, then renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planner.errors import FtplanError
from planner.files import current_umask, write_atomic
from planner.plan import PLAN_FILENAME, Plan, dump_plan, load_plan, processes_per_node, world_size
from planner.rules.common import hours_text, params_text
from planner.units import GIB, gib_value

LAUNCH = "launch.sh"
ACCELERATE = "accelerate_config.yaml"
DEEPSPEED = "deepspeed.json"
REPORT = "REPORT.md"
SLURM = "slurm.sbatch"
SKY = "sky.yaml"
SKYIGNORE = ".skyignore"  # what SkyPilot leaves out of the workdir upload (the plan folder)
RENDERED = (PLAN_FILENAME, LAUNCH, ACCELERATE, DEEPSPEED, REPORT, SLURM, SKY, SKYIGNORE)
DEFAULT_MASTER_PORT = 29500  # torch.distributed's customary default port


# ----------------------------------------------------------------------------------------------
# Jinja environment
# ----------------------------------------------------------------------------------------------


def _shquote(value) -> str:
    return shlex.quote(str(value))


def _gib(n_bytes) -> str:
    return f"{gib_value(n_bytes):.1f}"


_hours = hours_text  # the Jinja filter and summary() share the rules' formatting


def _usd(x) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"${x:,.2f}"


def _num(x) -> str:
    if isinstance(x, bool) or x is None:
        return str(x).lower() if isinstance(x, bool) else "null"
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _md(text) -> str:
    """A value safe inside a Markdown table cell (pipes and newlines would break the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(v) -> str:
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    return _num(v)


@lru_cache(maxsize=1)
def environment():
    """The one Jinja environment (templates are the files of the top-level ``templates`` package)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dirs()),
        bytecode_cache=_bytecode_cache(jinja2),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        shquote=_shquote,
        gib=_gib,
        hours=_hours,
        params=params_text,
        usd=_usd,
        num=_num,
        md=_md,
        value=_value,
        tojson=lambda v: json.dumps(v),
    )
    return env


def _bytecode_cache(jinja2):
    """Compiled templates cached across processes (Jinja's per-user temp folder, owner-checked, 0700):
    compiling the five templates is most of a fresh `ftplan plan`'s rendering time. None if unusable."""
    try:
        return jinja2.FileSystemBytecodeCache()
    except Exception:  # noqa: BLE001 - no writable temp dir: compile every time
        return None


def template_dirs() -> list[str]:
    """Folders of the ``templates`` namespace package (shipped as package data).

    Not ``importlib.resources.files``: under a setuptools editable install the namespace path also
    holds the finder's path-hook entry, which resources rejects (NotADirectoryError on 3.11).
    """
    import templates

    dirs = list(dict.fromkeys(p for p in templates.__path__ if os.path.isdir(p)))
    if not dirs:  # pragma: no cover - broken installation
        raise FtplanError("the ftplan templates folder is missing", hint="reinstall ftplan")
    return dirs


def _render(name: str, **context) -> str:
    import jinja2

    try:
        return environment().get_template(name).render(**context)
    except jinja2.TemplateError as exc:  # a template bug, not a user error: say which template
        raise FtplanError(f"templates/{name}: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# What the templates receive: the plan plus derived, already-formatted facts (no logic in Jinja)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """How launch.sh starts the executor for this plan."""

    processes: int  # world size (GPUs per node x nodes)
    gpus_per_node: int
    nodes: int
    multi_process: bool  # accelerate launch (or torchrun/deepspeed) instead of plain python
    accelerate_type: str  # NO | MULTI_GPU | DEEPSPEED | FSDP
    deepspeed: bool
    zero_stage: int


def launch_info(plan: Plan) -> Launch:
    dist = plan.strategy.distribution
    gpu = plan.hardware.gpu is not None
    per_node = processes_per_node(plan)  # CPU DDP/ZeRO plans: hardware.count gloo processes per node
    world = world_size(plan)
    cpu_multi = not gpu and world > 1  # --cpu-processes N [--nodes M]
    nodes = plan.hardware.nodes if (gpu or cpu_multi) else 1
    zero = {"zero1": 1, "zero2": 2, "zero3": 3}.get(dist, 0)
    deepspeed = (gpu or cpu_multi) and zero > 0
    # CPU DDP is MULTI_GPU with use_cpu: accelerate 1.15 starts several processes (torchrun's launcher) only
    # for MULTI_GPU/DEEPSPEED/FSDP configs; MULTI_CPU goes to its simple launcher, which starts ONE process
    # and expects mpirun around it (accelerate/commands/launch.py launch_command, "Multi-CPU" docs). The
    # ranks still train on CPU over gloo: TrainingArguments(use_cpu=True) in executor/trainer.py.
    acc_type = (
        "DEEPSPEED"
        if deepspeed
        else "FSDP"
        if (gpu and dist == "fsdp")
        else "MULTI_GPU"
        if world > 1
        else "NO"
    )
    # DeepSpeed needs its launcher even on one GPU (ZeRO-Offload); otherwise one process is plain python.
    multi = cpu_multi or (gpu and (world > 1 or deepspeed or dist == "fsdp"))
    return Launch(world, per_node, nodes, multi, acc_type, deepspeed, zero)


def render_plan_yaml(plan: Plan) -> str:
    return dump_plan(plan)


def render_launch(plan: Plan) -> str:
    return _render("launch.sh.j2", plan=plan, launch=launch_info(plan), master_port=DEFAULT_MASTER_PORT)


def render_accelerate_config(plan: Plan) -> str:
    return _render(
        "accelerate_config.yaml.j2",
        plan=plan,
        launch=launch_info(plan),
        mixed_precision={"bf16": "bf16", "fp16": "fp16"}.get(plan.strategy.precision, "no"),
    )


def deepspeed_dict(plan: Plan, hidden_size: int | None = None) -> dict:
    """The DeepSpeed config as data (rendered by deepspeed.json.j2; tests parse it with DeepSpeed)."""
    return json.loads(render_deepspeed(plan, hidden_size))


def render_deepspeed(plan: Plan, hidden_size: int | None = None) -> str:
    """deepspeed.json; its zero_optimization values come from planner.sharding.deepspeed_zero_values, the
    function the memory estimate reads them from. ``hidden_size``: the model's (default: resolved from
    plan.model without network, see ``_model_hidden_size``)."""
    from planner.sharding import deepspeed_zero_values

    launch = launch_info(plan)
    hidden = hidden_size or _model_hidden_size(plan.model.name_or_path)
    values = deepspeed_zero_values(hidden, launch.zero_stage)
    zero_values = [(k, json.dumps(v)) for k, v in values.items()]
    return _render("deepspeed.json.j2", plan=plan, launch=launch, zero_values=zero_values)


@lru_cache(maxsize=32)
def _model_hidden_size(name: str) -> int | None:
    """The hidden size of plan.model (local folder, catalog or HF cache; never the network). None when it
    cannot be read here: deepspeed.json then says "auto" and transformers fills the same numbers."""
    from planner.model_spec import load_model_spec

    try:
        return load_model_spec(name, offline=True).hidden_size
    except FtplanError:
        return None


def render_report(result) -> str:
    """REPORT.md: decisions with reasons, memory of every strategy, time/cost, data, commands."""
    return _render("REPORT.md.j2", **report_context(result))


def report_context(result) -> dict:
    plan = result.plan
    rows = []
    chosen_name = _chosen_option_name(result)
    for opt in getattr(result, "options", []) or []:
        e = opt.estimate
        m = e.memory
        rows.append(
            dict(
                name=opt.name,
                chosen=opt.name == chosen_name,
                weights=m.weights,
                gradients=m.gradients,
                optimizer=m.optimizer,
                activations=m.activations,
                temporary=m.temporary,
                overhead=m.overhead,
                total=m.total,
                cpu=m.cpu_bytes,
                verdict=e.verdict,
                micro_batch=opt.micro_batch,
                ckpt=opt.gradient_checkpointing,
                time=e.time_hours,
                cost=e.cost_usd,
            )
        )
    alts = []
    hw = plan.hardware
    here = f"{hw.count}x {hw.gpu}" if hw.gpu else "CPU"
    alts.append(
        dict(
            label="this plan",
            hardware=here,
            strategy=_strategy_label(plan),
            time=plan.estimate.time_hours,
            cost=plan.estimate.cost_usd,
        )
    )
    for label in ("cheapest", "fastest"):
        a = (getattr(result, "alternatives", None) or {}).get(label)
        if a is not None:
            alts.append(
                dict(
                    label=label,
                    hardware=f"{a.count}x {a.gpu}",
                    strategy=a.strategy,
                    time=a.time_hours,
                    cost=a.cost_usd,
                )
            )
    p = result.profile
    invalid = [dict(line=r.line, reason=r.reason) for r in p.invalid[:10]]
    return dict(
        plan=plan,
        rows=rows,
        alternatives=alts,
        profile=p,
        invalid=invalid,
        strategy_label=_strategy_label(plan),
        launch=launch_info(plan),
        spec=result.spec,
        world=launch_info(plan).processes,
    )


def _chosen_option_name(result) -> str:
    plan = result.plan
    for opt in getattr(result, "options", []) or []:
        s = opt.candidate.setup
        if (s.method, s.distribution, s.offload_optimizer, s.offload_params) == (
            plan.strategy.method,
            plan.strategy.distribution,
            plan.strategy.offload_optimizer,
            plan.strategy.offload_params,
        ):
            return opt.name
    return ""


def _strategy_label(plan: Plan) -> str:
    s = plan.strategy
    parts = [s.method]
    if s.distribution != "single":
        parts.append(s.distribution)
    if s.offload_optimizer or s.offload_params:
        parts.append("offload")
    return "-".join(parts)


# ----------------------------------------------------------------------------------------------
# Cluster and cloud submission files: slurm.sbatch (Slurm) and sky.yaml (SkyPilot). Both start launch.sh
# once per node with NNODES / NODE_RANK / MASTER_ADDR from the scheduler; both are plan-derived only (no
# secret, no user environment) and rewritten by `ftplan launch` right before it prints the submit command.
# ----------------------------------------------------------------------------------------------

# ftplan GPU catalog name -> the SkyPilot accelerator names of that card (any of them will do; SkyPilot's
# optimizer takes the cheapest offer). Sources, SkyPilot 0.14.1: sky/utils/gpu_names.py
# (CANONICAL_GPU_NAMES), sky/catalog/__init__.py (get_common_gpus), sky/provision/runpod/utils.py (RunPod's
# 'H100-SXM', 'H200-SXM', 'RTX4090', 'RTXA6000', 'RTX6000-Ada', ...) and
# sky/catalog/data_fetchers/fetch_lambda_cloud.py (Lambda's 'A6000'). 'H100' is the SXM card on AWS (p5),
# GCP (a3), Azure and Lambda; RunPod alone uses it for the PCIe card, which has the same 80 GB.
SKYPILOT_ACCELERATORS: dict[str, tuple[str, ...]] = {
    "T4": ("T4",),
    "V100-16GB": ("V100",),
    "V100-32GB": ("V100-32GB",),
    "A10G": ("A10G",),
    "A10": ("A10",),
    "L4": ("L4",),
    "L40S": ("L40S",),
    "A40": ("A40",),
    "A100-40GB": ("A100",),
    "A100-80GB": ("A100-80GB",),
    "H100-PCIe": ("H100",),
    "H100-SXM": ("H100", "H100-SXM"),
    "H100-NVL": ("H100-NVL",),
    "H200": ("H200", "H200-SXM"),
    "B200": ("B200",),
    "RTX-3090": ("RTX3090",),
    "RTX-4090": ("RTX4090",),
    "RTX-5090": ("RTX5090",),
    "RTX-A6000": ("RTXA6000", "A6000"),
    "RTX-6000-Ada": ("RTX6000-Ada",),
    "MI300X": ("MI300X",),
}

# Bucket URL schemes SkyPilot mounts (sky/data/storage.py, StoreType sources: S3, GCS, R2, IBM COS, OCI,
# Nebius, CoreWeave; Azure as https://<account>.blob.core.windows.net/<container>).
BUCKET_SCHEMES = ("s3://", "gs://", "r2://", "cos://", "oci://", "nebius://", "cw://")
AZURE_BLOB = ".blob.core.windows.net/"

# Secrets the run may need, passed to SkyPilot by name only (`--secret NAME` reads the value from the local
# environment, sky/client/cli/flags.py _parse_secret_var); Slurm's sbatch exports the submitting shell's
# environment (--export=ALL, its default). Neither value is ever written into a plan file.
SECRET_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
)

# Slurm time limit: the plan's time estimate x margin + fixed start-up (environment, model download and
# load, base-model evaluation, final save). The estimate's measured error is in BENCHMARKS.md; a limit that
# is still too short costs one requeue (the job checkpoints and resumes), not the run.
TIME_MARGIN = 1.5
TIME_STARTUP_H = 0.5
# Grace between the warning signal and the time limit: one optimizer step plus one checkpoint save at an
# assumed 500 MB/s to the shared filesystem, plus a minute; within [2 min, 1 h].
CHECKPOINT_WRITE_BPS = 500e6
GRACE_MIN_S, GRACE_MAX_S = 120, 3600
MAX_REQUEUES = 3  # time-limit requeues before the job stops requeueing itself (FTPLAN_MAX_REQUEUES)
# CPU cores per training process: the rank itself plus data loading (assumed); ZeRO-Offload runs the
# optimizer step on the host with DeepSpeed's CPU Adam (Ren et al. 2021, ZeRO-Offload), so it gets more.
CPUS_PER_PROCESS, CPUS_PER_OFFLOAD_PROCESS = 4, 8
# Host memory beside an offload plan's estimate.cpu_bytes: per process, Python, the CUDA context's host
# side, data loading and loading one safetensors shard at a time (assumed, not measured).
HOST_BYTES_PER_PROCESS = 8e9
HOST_MARGIN = 1.25
# Disk per node: OS image, CUDA, the training stack's virtualenv and caches (assumed), plus what the plan
# writes; hub weights are counted at 2 bytes per parameter (the bf16/fp16 safetensors most models ship).
DISK_BASE_GB = 64
HUB_BYTES_PER_PARAM = 2
DISK_MARGIN = 1.2
SKY_VENV = "$HOME/.ftplan-venv"  # where sky.yaml's setup installs ftplan on each node
SKY_SOURCE = "~/ftplan-src"  # where the local ftplan checkout is mounted on each node
SKY_WORKDIR = "~/sky_workdir"  # SkyPilot's remote workdir (sky/skylet/constants.py SKY_REMOTE_WORKDIR)


def gains_cluster_files(plan: Plan) -> bool:
    """Whether ``ftplan plan`` writes slurm.sbatch (and sky.yaml for a GPU plan) into the folder: more than
    one process or node. ``ftplan launch --slurm|--sky`` writes them for any plan."""
    launch = launch_info(plan)
    return launch.processes > 1 or launch.nodes > 1


def _safe_name(text: str, limit: int = 40) -> str:
    """A job/cluster name from free text: lower-case letters, digits and dashes, starting with a letter
    (what SkyPilot's cluster names and Slurm's job names both accept)."""
    name = "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:limit].strip("-")
    return name if name[:1].isalpha() else f"ftplan-{name}".strip("-")


def job_name(plan: Plan) -> str:
    """``ftplan-<model>-<method>``: what squeue and sky status show."""
    model = plan.model.name_or_path.rstrip("/").rsplit("/", 1)[-1]
    return _safe_name(f"ftplan-{model}-{plan.strategy.method}")


def cluster_name(plan_dir: str | os.PathLike) -> str:
    """The SkyPilot cluster name `ftplan launch --sky` proposes: ``ftplan-<plan folder name>``."""
    return _safe_name(f"ftplan-{Path(plan_dir).resolve().name}", limit=35)


def slurm_time(hours: float) -> str:
    """Slurm's ``D-HH:MM:SS`` for a time limit of ``hours`` (minutes rounded up to a multiple of 5)."""
    minutes = int(math.ceil(hours * 60 / 5) * 5)
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def time_limit_hours(plan: Plan) -> float | None:
    """The job's time limit in hours, or None when the plan has no time estimate (site default applies)."""
    est = plan.estimate.time_hours
    if not est or not math.isfinite(est):
        return None
    return est * TIME_MARGIN + TIME_STARTUP_H


def grace_seconds(plan: Plan) -> int:
    """Seconds between Slurm's warning signal and the time limit: one step plus one checkpoint save."""
    from planner.rules.evaluation import checkpoint_bytes, seconds_per_step

    step = seconds_per_step(plan.estimate.time_hours, plan.estimate.steps)
    need = step + checkpoint_bytes(plan) / CHECKPOINT_WRITE_BPS + 60
    grace = min(max(need, GRACE_MIN_S), GRACE_MAX_S)
    limit = time_limit_hours(plan)
    if limit:
        grace = min(grace, limit * 3600 / 2)  # never more than half the job
    return int(math.ceil(grace / 30) * 30)


def host_memory_gb(plan: Plan) -> int:
    """Host RAM per node the plan needs beyond a scheduler's default, in GB; 0 when nothing special (a GPU
    plan without offload). CPU plans hold everything in host RAM (estimate.total per process)."""
    procs = processes_per_node(plan)
    if plan.hardware.gpu is None:
        need = plan.estimate.total * procs
    elif plan.estimate.cpu_bytes:
        need = plan.estimate.cpu_bytes + HOST_BYTES_PER_PROCESS * procs
    else:
        return 0
    return int(math.ceil(need * HOST_MARGIN / 1e9))


def disk_gb(plan: Plan) -> int:
    """Disk per node for a cloud run, in GB: base image and environment + the hub weights + every checkpoint
    the plan keeps (save_total_limit + 1 while the newest commits) + the final (and merged) model."""
    from planner.rules.evaluation import SAVED_BYTES, checkpoint_bytes

    params = plan.model.total_params
    s = plan.strategy
    keep = plan.checkpointing.save_total_limit + 1
    final = params * (4 if s.mixed_precision else SAVED_BYTES.get(s.precision, 4)) if s.method == "full" else 0
    merged = params * HUB_BYTES_PER_PARAM if plan.lora is not None and plan.lora.merge_after else 0
    plan_bytes = params * HUB_BYTES_PER_PARAM + checkpoint_bytes(plan) * keep + final + merged
    return int(math.ceil((DISK_BASE_GB + plan_bytes * DISK_MARGIN / 1e9) / 10) * 10)


def cpus_per_task(plan: Plan) -> int:
    offload = plan.strategy.offload_optimizer or plan.strategy.offload_params
    return processes_per_node(plan) * (CPUS_PER_OFFLOAD_PROCESS if offload else CPUS_PER_PROCESS)


def render_slurm(plan: Plan) -> str:
    """slurm.sbatch: one task per node running launch.sh, requeued on pre-emption and near the time limit."""
    launch = launch_info(plan)
    limit = time_limit_hours(plan)
    return _render(
        "slurm.sbatch.j2",
        plan=plan,
        launch=launch,
        job_name=job_name(plan),
        gpus_per_node=launch.gpus_per_node if plan.hardware.gpu else 0,
        cpus_per_task=cpus_per_task(plan),
        mem_gb=host_memory_gb(plan),
        time=slurm_time(limit) if limit else "",
        grace=grace_seconds(plan),
        max_requeues=MAX_REQUEUES,
        master_port=DEFAULT_MASTER_PORT,
    )


@dataclass(frozen=True)
class SkyAccelerator:
    gpu: str  # the ftplan catalog GPU sky.yaml asks for
    names: tuple[str, ...]  # its SkyPilot accelerator names
    note: str  # why another GPU than the plan's, or ""


def sky_accelerator(plan: Plan) -> SkyAccelerator:
    """The SkyPilot accelerator for the plan's GPU. A GPU no cloud sells under a SkyPilot name (a generic
    GPU from --gpu-memory, a probed card outside the catalog) becomes the cheapest catalog GPU the plan runs
    on unchanged (the same world size, at least the plan's memory per GPU, bf16 when it trains in bf16):
    the plan's settings stay valid, only its time and cost estimates change."""
    from planner.hardware import gpu_catalog, resolve_gpu

    hw = plan.hardware
    if hw.gpu is None:
        raise FtplanError(
            "hardware.gpu is null: a CPU plan has no cloud GPU to ask for",
            hint="run it with `ftplan run`, or re-plan with --gpu NAME for a cloud run",
        )
    name = hw.gpu
    if name not in SKYPILOT_ACCELERATORS:
        try:
            name = resolve_gpu(name).name
        except FtplanError:
            pass
    if name in SKYPILOT_ACCELERATORS:
        return SkyAccelerator(name, SKYPILOT_ACCELERATORS[name], "")
    bf16 = plan.strategy.precision == "bf16"
    fitting = [
        g
        for g in gpu_catalog().values()
        if g.name in SKYPILOT_ACCELERATORS and g.memory_bytes / GIB >= hw.memory_gib and (g.bf16 or not bf16)
    ]
    if not fitting:
        raise FtplanError(
            f"hardware.gpu '{hw.gpu}' has no SkyPilot accelerator name and no catalog GPU has its "
            f"{hw.memory_gib:g} GiB",
            hint="re-plan with --gpu NAME (see `ftplan hardware --list`)",
        )
    best = min(fitting, key=lambda g: (g.price_per_hour, g.memory_gb))
    note = (
        f"hardware.gpu {hw.gpu!r} has no SkyPilot name: asking for {best.name} (the cheapest catalog GPU "
        f"with >= {hw.memory_gib:g} GiB{' and bf16' if bf16 else ''}, ${best.price_per_hour:g}/GPU-hour)"
    )
    return SkyAccelerator(best.name, SKYPILOT_ACCELERATORS[best.name], note)


def check_bucket(url: str) -> str:
    """A bucket URL SkyPilot can mount, without credentials in it; returned stripped of a trailing slash."""
    url = url.strip()
    ok = url.startswith(BUCKET_SCHEMES) or (url.startswith("https://") and AZURE_BLOB in url)
    ok = ok and url.isprintable() and not any(c.isspace() for c in url)
    if not ok or len(url.split("://", 1)[1].strip("/")) == 0:
        raise FtplanError(
            f"--bucket {url!r}: not a bucket URL",
            hint="e.g. s3://my-bucket/runs/qwen, gs://..., r2://..., or https://ACCOUNT.blob.core.windows.net/C",
        )
    if "@" in url.split("://", 1)[1].split("/", 1)[0] or "?" in url:
        raise FtplanError(
            "--bucket: the URL carries credentials or a query",
            hint="give the plain bucket URL; SkyPilot uses your cloud credentials (sky check)",
        )
    return url.rstrip("/")


def ftplan_source_dir() -> Path | None:
    """The ftplan checkout this code runs from (pyproject.toml and constraints.txt beside the packages), or
    None for an installed wheel. sky.yaml mounts it on every node and installs it with the tested versions."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "constraints.txt").is_file() and (root / "executor").is_dir():
        return root
    return None


_DEFAULT_SOURCE = object()


def _local_mounts(plan: Plan) -> list[tuple[str, str]]:
    """(remote, local) file mounts for the local inputs plan.yaml names by absolute path: each lands at the
    same path on every node, so plan.yaml needs no edit there. Relative paths travel with the workdir (the
    plan folder, where the executor looks first); hub ids are downloaded on the node."""
    paths = [plan.data.path, plan.data.general_path]
    if plan.model.source == "local":
        paths.append(plan.model.name_or_path)
    return [(p, p) for p in dict.fromkeys(p for p in paths if p and os.path.isabs(p))]


def render_sky(plan: Plan, *, bucket: str | None = None, source=_DEFAULT_SOURCE) -> str:
    """sky.yaml: a SkyPilot task for the plan's GPUs, its nodes, a disk for the weights and checkpoints, a
    setup that installs ftplan with the tested versions, a run that starts launch.sh with SkyPilot's node
    rank and head IP; ``bucket``: output/ is that bucket (MOUNT_CACHED), else the node's disk.
    ``source``: the ftplan checkout to mount (default: this one, None: install ftplan from the index)."""
    from planner import __version__

    launch = launch_info(plan)
    acc = sky_accelerator(plan)
    src = ftplan_source_dir() if source is _DEFAULT_SOURCE else source
    extras = ["train", "gpu", "data"] + (["deepspeed"] if launch.deepspeed else [])
    return _render(
        "sky.yaml.j2",
        plan=plan,
        launch=launch,
        task_name=job_name(plan),
        accelerators={n: launch.gpus_per_node for n in acc.names},
        gpu=acc.gpu,
        gpu_note=acc.note,
        disk_gb=disk_gb(plan),
        memory_gb=host_memory_gb(plan),
        mounts=_local_mounts(plan),
        bucket=check_bucket(bucket) if bucket else None,
        output_mount=plan.output_dir if os.path.isabs(plan.output_dir) else f"{SKY_WORKDIR}/{plan.output_dir}",
        source=str(src) if src else None,
        source_mount=SKY_SOURCE,
        venv=SKY_VENV,
        requirement=f"ftplan[{','.join(extras)}]",
        version=__version__,
        master_port=DEFAULT_MASTER_PORT,
    )


# SkyPilot uploads the workdir with rsync; a .skyignore there replaces .gitignore as its filter
# (sky/utils/command_runner.py). output/ stays home: a local run's checkpoints (and its run lock, naming
# this host) must not land on the nodes; a bucket or the node's disk holds the cloud run's.
SKYIGNORE_TEXT = "# Left out of `sky launch`'s upload of this plan folder (written by ftplan).\noutput/\nslurm-*.out\n"


def render_cluster_files(plan: Plan, *, bucket: str | None = None, source=_DEFAULT_SOURCE) -> dict[str, str]:
    """slurm.sbatch, and for a GPU plan sky.yaml and .skyignore."""
    files = {SLURM: render_slurm(plan)}
    if plan.hardware.gpu is not None:
        files[SKY] = render_sky(plan, bucket=bucket, source=source)
        files[SKYIGNORE] = SKYIGNORE_TEXT
    return files



# ----------------------------------------------------------------------------------------------
# The folder
# ----------------------------------------------------------------------------------------------


def render_files(result) -> dict[str, str]:
    """Every file of the plan folder as text (deepspeed.json only for ZeRO plans; slurm.sbatch, and for GPUs
    sky.yaml, only for plans of several processes or nodes)."""
    plan = result.plan
    files = {
        PLAN_FILENAME: render_plan_yaml(plan),
        REPORT: render_report(result),
        LAUNCH: render_launch(plan),
        ACCELERATE: render_accelerate_config(plan),
    }
    if launch_info(plan).deepspeed:
        files[DEEPSPEED] = render_deepspeed(plan, getattr(result.spec, "hidden_size", None))
    if gains_cluster_files(plan):
        files.update(render_cluster_files(plan))
    return files


def rerender_configs(plan: Plan, plan_dir: str | os.PathLike) -> list[str]:
    """Re-render the files derived from plan.yaml alone (launch.sh, accelerate_config.yaml and
    deepspeed.json) after the plan changed in place, e.g. an out-of-memory fallback: DeepSpeed's
    explicit micro-batch/accumulation must keep matching the Trainer's arguments. Each file is
    replaced atomically; REPORT.md (which needs the estimates) is left as planned. Returns the names."""
    folder = Path(plan_dir)
    files = {LAUNCH: render_launch(plan), ACCELERATE: render_accelerate_config(plan)}
    if launch_info(plan).deepspeed:
        files[DEEPSPEED] = render_deepspeed(plan)
    for name, text in files.items():
        write_atomic(folder / name, text, mode=0o755 if name == LAUNCH else 0o644)
    stale = folder / DEEPSPEED
    if DEEPSPEED not in files and stale.exists():
        stale.unlink()
    return sorted(files)


def write_launch_file(plan_dir: str | os.PathLike, kind: str, *, bucket: str | None = None) -> Path:
    """``ftplan launch``: re-render the launcher configs from plan.yaml, then write slurm.sbatch (``kind``
    "slurm") or sky.yaml and .skyignore ("sky") for this plan, validated before they replace the old ones.
    Returns the file written. Submits nothing."""
    folder = Path(plan_dir)
    plan = load_plan(folder)
    if kind == "slurm":
        files = {SLURM: render_slurm(plan)}
    elif kind == "sky":
        files = {SKY: render_sky(plan, bucket=bucket), SKYIGNORE: SKYIGNORE_TEXT}
        for _, local in _local_mounts(plan):
            if not Path(local).exists():
                raise FtplanError(
                    f"{local}: not found here, and sky.yaml uploads it from this machine",
                    hint="fix the path in plan.yaml or launch from the machine that has it",
                )
    else:  # pragma: no cover - the CLI offers only these two
        raise ValueError(kind)
    _check_text(files)
    rerender_configs(plan, folder)
    for name, text in files.items():
        write_atomic(folder / name, text, mode=0o755 if name == SLURM else 0o644)
    return folder / (SLURM if kind == "slurm" else SKY)


def _check_text(files: dict[str, str]) -> None:
    """Validate rendered submission files before writing them: the folder validator on a scratch copy."""
    with tempfile.TemporaryDirectory(prefix="ftplan-check-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        _validate_submission(Path(tmp))


def validate_folder(folder: Path) -> None:
    """Re-read what was rendered: plan.yaml by the schema, JSON/YAML by their parsers, launch.sh and
    slurm.sbatch by ``bash -n``."""
    import yaml

    load_plan(folder / PLAN_FILENAME)
    ds = folder / DEEPSPEED
    if ds.exists():
        try:
            json.loads(ds.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FtplanError(f"rendered {DEEPSPEED} is not valid JSON ({exc})") from None
    try:
        yaml.load(
            (folder / ACCELERATE).read_text(encoding="utf-8"),
            Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
        )
    except yaml.YAMLError as exc:
        raise FtplanError(f"rendered {ACCELERATE} is not valid YAML ({exc})") from None
    _validate_submission(folder)


def _validate_submission(folder: Path) -> None:
    """launch.sh and slurm.sbatch by ``bash -n``; sky.yaml by the YAML parser and its three sections (the
    tests also load it with SkyPilot's own parser, which does not install beside ftplan's pins)."""
    import yaml

    sky = folder / SKY
    if sky.exists():
        try:
            task = yaml.load(sky.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as exc:
            raise FtplanError(f"rendered {SKY} is not valid YAML ({exc})") from None
        if not isinstance(task, dict) or not {"resources", "setup", "run"} <= set(task):
            raise FtplanError(f"rendered {SKY} lacks resources/setup/run")
    bash = shutil.which("bash")
    if bash:
        for name in (LAUNCH, SLURM):
            if not (folder / name).exists():
                continue
            proc = subprocess.run([bash, "-n", str(folder / name)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise FtplanError(f"rendered {name} has a shell syntax error: {proc.stderr.strip()}")


def check_out_dir(out_dir: str | os.PathLike, force: bool = False) -> Path:
    """The target folder: refused when it exists with files in it, unless ``force``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FtplanError(f"--out {out}: exists and is not a folder", hint="choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FtplanError(
            f"--out {out}: folder exists and is not empty",
            hint="choose another --out, or pass --force to replace the plan files in it",
        )
    return out


def write_plan_folder(result, out_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Render, validate and move the plan folder into place; returns its path.

    A new folder appears in one rename. With ``force`` on an existing folder, each plan file is
    replaced atomically and everything else in it (a previous run's ``output/``) is kept.
    """
    out = check_out_dir(out_dir, force)
    files = render_files(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        for name in (LAUNCH, SLURM):
            if (tmp / name).exists():
                (tmp / name).chmod(0o755 & ~current_umask())
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the plan folder gets normal permissions
        validate_folder(tmp)
        if not out.exists():
            os.replace(tmp, out)
            return out
        if not any(out.iterdir()):
            out.rmdir()
            os.replace(tmp, out)
            return out
        for name in RENDERED:  # --force over an existing folder
            src, dst = tmp / name, out / name
            if src.exists():
                os.replace(src, dst)
            elif dst.exists():
                dst.unlink()  # e.g. a stale deepspeed.json after re-planning without ZeRO
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

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
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from planner.errors import FtplanError
from planner.files import write_atomic
from planner.plan import PLAN_FILENAME, Plan, dump_plan, load_plan, processes_per_node, world_size
from planner.rules.common import hours_text, params_text

LAUNCH = "launch.sh"
ACCELERATE = "accelerate_config.yaml"
DEEPSPEED = "deepspeed.json"
REPORT = "REPORT.md"
RENDERED = (PLAN_FILENAME, LAUNCH, ACCELERATE, DEEPSPEED, REPORT)
DEFAULT_MASTER_PORT = 29500  # torch.distributed's customary default port


# ----------------------------------------------------------------------------------------------
# Jinja environment
# ----------------------------------------------------------------------------------------------


def _shquote(value) -> str:
    return shlex.quote(str(value))


def _gb(n_bytes) -> str:
    return f"{(n_bytes or 0) / 1e9:.1f}"


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
        gb=_gb,
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
    per_node = processes_per_node(plan)  # CPU DDP/ZeRO plans: hardware.count gloo processes
    cpu_multi = not gpu and per_node > 1
    nodes = plan.hardware.nodes if gpu else 1
    world = world_size(plan)
    zero = {"zero1": 1, "zero2": 2, "zero3": 3}.get(dist, 0)
    deepspeed = (gpu or cpu_multi) and zero > 0
    acc_type = (
        "DEEPSPEED"
        if deepspeed
        else "FSDP"
        if (gpu and dist == "fsdp")
        else "MULTI_GPU"
        if (gpu and world > 1)
        else "MULTI_CPU"
        if cpu_multi
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
# The folder
# ----------------------------------------------------------------------------------------------


def render_files(result) -> dict[str, str]:
    """Every file of the plan folder as text (deepspeed.json only for ZeRO plans)."""
    plan = result.plan
    files = {
        PLAN_FILENAME: render_plan_yaml(plan),
        REPORT: render_report(result),
        LAUNCH: render_launch(plan),
        ACCELERATE: render_accelerate_config(plan),
    }
    if launch_info(plan).deepspeed:
        files[DEEPSPEED] = render_deepspeed(plan, getattr(result.spec, "hidden_size", None))
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


def validate_folder(folder: Path) -> None:
    """Re-read what was rendered: plan.yaml by the schema, JSON/YAML by their parsers, launch.sh by
    ``bash -n``."""
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
    bash = shutil.which("bash")
    if bash:
        proc = subprocess.run([bash, "-n", str(folder / LAUNCH)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FtplanError(f"rendered {LAUNCH} has a shell syntax error: {proc.stderr.strip()}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        (tmp / LAUNCH).chmod(0o755 & ~_umask())
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; the plan folder gets normal permissions
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

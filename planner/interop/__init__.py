"""ftplan in front of the trainers people already use: read an axolotl or LLaMA-Factory training config
(``read_config``), estimate it (``estimate_config``: ``ftplan estimate --config``), plan from it
(``planner.interop.review.plan_with_config``: ``ftplan plan --config``) and write a plan back as one of their
configs (``export_config``: ``ftplan export --to``).

Pure planner code (no torch): each tool has one mapping table (``planner/interop/axolotl.py``,
``planner/interop/llama_factory.py``) that both directions walk. A config's settings become plan.yaml dotted
keys and reach the estimator through ``planner.convert.setup_from_plan``, the one plan -> setup converter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import FtplanError
from planner.interop.common import (
    FORMATS,
    LORA_FAMILY,
    BadValue,
    Ctx,
    classify,
    load_accelerate_config,
    show,
)
from planner.units import GIB

__all__ = ["ConfigImport", "FORMATS", "config_json", "detect_format", "estimate_config", "export_config",
           "read_config", "tool_plan"]

# Keys only one of the two tools has: how a config is recognised when --config-format is not given.
_MARKERS = {
    "axolotl": ("base_model", "micro_batch_size", "sequence_len", "adapter", "num_epochs", "datasets", "lora_r",
                "sample_packing", "load_in_4bit", "optimizer", "lr_scheduler", "val_set_size", "rl"),
    "llama-factory": ("model_name_or_path", "stage", "finetuning_type", "per_device_train_batch_size", "cutoff_len",
                      "dataset", "template", "lora_rank", "lora_target", "num_train_epochs", "lr_scheduler_type",
                      "quantization_bit", "optim"),
}


def _module(fmt: str):
    if fmt == "axolotl":
        from planner.interop import axolotl

        return axolotl
    if fmt == "llama-factory":
        from planner.interop import llama_factory

        return llama_factory
    raise FtplanError(f"unknown config format '{fmt}'", hint="axolotl or llama-factory")


@dataclass
class ConfigImport:
    """A trainer config read into plan.yaml terms.

    ``overrides``: the config's own settings as dotted plan keys (what ``plan --config`` pins, as ``--set``
    would); ``defaults``: the tool's values for what the config leaves out; ``semantics``: how the tool runs
    (its loss path, its QLoRA upcast), used to estimate the config, never to override ftplan's rules;
    ``reported``: read but not planned from (the validation split, the chat template, the dataset). ``mapped``:
    one entry per row (tool keys and values -> plan keys and values, the row's note, whether the tool's default).
    ``unsupported_keys``: set keys that change memory or time but are not modelled (key -> why, how estimated);
    ``ignored_keys``: keys without effect on memory or time, listed rather than dropped."""

    path: str
    format: str
    model: str
    task: str
    gpus: int
    overrides: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    semantics: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    mapped: list[dict] = field(default_factory=list)
    tool_keys: dict[str, str] = field(default_factory=dict)  # plan key -> the config key it came from
    unsupported_keys: dict[str, str] = field(default_factory=dict)
    ignored_keys: list[str] = field(default_factory=list)
    data: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def settings(self) -> dict[str, Any]:
        """What the tool runs: its defaults, then how it runs, then the config's own settings."""
        return {**self.defaults, **self.semantics, **self.reported, **self.overrides}

    def plan_overrides(self) -> dict[str, Any]:
        """The config's settings as plan keys for ``--set``. The model and task go to the request itself;
        ``trust_remote_code`` stays the user's ``--trust-remote-code`` (a config does not turn it on)."""
        return {k: v for k, v in self.overrides.items()
                if k not in ("task", "model.name_or_path", "model.trust_remote_code")}


def detect_format(cfg: dict, source: str = "config") -> str:
    """'axolotl' or 'llama-factory' from the keys only one of them uses."""
    if not isinstance(cfg, dict):
        raise FtplanError(f"{source}: must hold a mapping of settings")
    scores = {fmt: sum(k in cfg for k in keys) for fmt, keys in _MARKERS.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        raise FtplanError(f"{source}: cannot tell whether this is an axolotl or a LLaMA-Factory config "
                          f"(base_model vs model_name_or_path)", hint="pass --config-format axolotl|llama-factory")
    return best


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FtplanError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FtplanError(f"--config {path}: cannot read it ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FtplanError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise FtplanError(f"{path}: must hold a mapping of settings, got {type(data).__name__}")
    return data


def processes_of(accelerate: dict | None) -> int | None:
    """``num_processes`` of an accelerate config (all nodes), if it says."""
    n = (accelerate or {}).get("num_processes")
    return n if isinstance(n, int) and n > 0 else None


def read_config(path: str | os.PathLike, fmt: str | None = None, *, gpus: int | None = None, bf16_ok: bool = True,
                accelerate_config: str | os.PathLike | dict | None = None, cfg: dict | None = None) -> ConfigImport:
    """Read an axolotl or LLaMA-Factory config (``fmt`` None: detected) into plan keys.

    ``gpus``: the processes it runs with (default: the accelerate config's, else 1); ``bf16_ok``: the hardware
    runs bf16 (axolotl's ``bf16: auto``). ``cfg``: the parsed settings when already in memory (``path`` then only
    names the source and anchors relative paths). Bad values raise one FtplanError naming the file and the key."""
    p = Path(path)
    cfg = _load_yaml(p) if cfg is None else cfg
    fmt = fmt or detect_format(cfg, str(p))
    mod = _module(fmt)
    acc = load_accelerate_config(accelerate_config) if isinstance(accelerate_config, (str, os.PathLike)) \
        else accelerate_config
    n = gpus or processes_of(acc) or 1
    ctx = Ctx(bf16_ok=bf16_ok, gpus=n, base=p.resolve().parent, accelerate=acc)
    for key, why in mod.REFUSED.items():
        if key in cfg and cfg[key] not in (None, False, "", [], {}):
            raise FtplanError(f"{p}: {key}: {why}", hint="ftplan cannot estimate this setup")
    ci = ConfigImport(path=str(p), format=fmt, model="", task="sft", gpus=n)
    consumed: set[str] = set()
    for row in mod.ROWS:
        given = {k: cfg[k] for k in row.tool if cfg.get(k) is not None}
        try:
            values = row.read(given, ctx)
        except BadValue as err:
            raise FtplanError(f"{p}: {err.key}: {err.message}", hint=err.hint) from None
        ctx.values.update(values)
        consumed.update(given)
        if not values:
            continue
        if row.semantics:
            target = ci.semantics
        elif not row.planned:
            target = ci.reported
        elif given or row.always:
            target = ci.overrides
        else:
            target = ci.defaults
        target.update(values)
        for k in values:
            if given:
                ci.tool_keys[k] = ", ".join(f"{tk}: {show(tv)}" for tk, tv in given.items())
        ci.mapped.append({"keys": {k: _plain(v) for k, v in given.items()}, "plan": dict(values),
                          "note": row.note, "default": not given and not row.always})
    for key, value in cfg.items():
        kind, why = classify(key, value, consumed, mod.UNSUPPORTED, mod.IGNORED, mod.IGNORED_PREFIXES, {})
        if kind == "unsupported":
            ci.unsupported_keys[key] = why
        elif kind == "ignored":
            ci.ignored_keys.append(key)
    ci.unsupported_keys.update(ctx.unsupported)
    ci.notes = list(ctx.notes)
    ci.model = ctx.values["model.name_or_path"]
    ci.task = ctx.values.get("task", "sft")
    ci.data = _data_entries(cfg, fmt, ctx.base)
    return ci


def _plain(value):
    """Config values as JSON-ready builtins (enums and odd scalars as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _data_entries(cfg: dict, fmt: str, base: Path) -> list[dict]:
    """The datasets a config trains on, as it names them (reported: ``plan --config`` trains on ``--data``)."""
    if fmt == "axolotl":
        out = []
        for d in cfg.get("datasets") or []:
            if isinstance(d, dict):
                out.append({k: _plain(v) for k, v in d.items() if k in ("path", "type", "ds_type", "data_files",
                                                                       "field_messages", "split")})
        return out
    names = [n.strip() for n in str(cfg.get("dataset") or "").split(",") if n.strip()]
    info_dir = base / str(cfg.get("dataset_dir", "data"))
    info = {}
    if (info_dir / "dataset_info.json").is_file():
        import json

        try:
            info = json.loads((info_dir / "dataset_info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
    return [{"name": n, **{k: _plain(v) for k, v in (info.get(n) or {}).items()
                           if k in ("file_name", "hf_hub_url", "formatting", "ranking")}} for n in names]


# ----------------------------------------------------------------------------------------------------------
# The config as a plan, and its estimate
# ----------------------------------------------------------------------------------------------------------


def hardware_section(hardware, processes: int):
    from planner.plan import HardwareSection

    return HardwareSection(
        gpu=hardware.gpu.name if hardware.gpu else None, count=max(1, processes), nodes=1,
        memory_gib=round(hardware.free_memory_bytes / GIB, 2), bf16=hardware.bf16, detected=hardware.detected,
        price_per_hour=float(hardware.hourly_price))


def tool_plan(ci: ConfigImport, spec, hardware):
    """A plan holding the config's settings as the tool runs them (its defaults for what the config leaves out),
    validated by the plan schema (errors name the config file)."""
    from planner.convert import setup_from_plan
    from planner.plan import DataSection, LoraSection, ModelSection, Plan, plan_from_dict, plan_to_dict, set_path

    settings = ci.settings()
    method = settings.get("strategy.method", "lora")
    base = Plan(model=ModelSection(name_or_path=spec.name, model_type=spec.model_type,
                                   total_params=int(spec.param_counts().total)),
                data=DataSection(path=ci.path), task=ci.task, hardware=hardware_section(hardware, ci.gpus),
                lora=LoraSection() if method in LORA_FAMILY else None)
    tree = plan_to_dict(base)
    fused = settings.get("training.fused_loss", True)
    for key, value in settings.items():
        if key == "model.name_or_path" or key.startswith("data."):
            continue  # the data settings are reported (plan --config trains on --data), not estimated
        if key.startswith("lora.") and method not in LORA_FAMILY:
            continue
        if key == "training.fused_loss" and ci.task == "preference":
            continue  # ftplan's DPO plans always run TRL's fused head; the tool's full logits are set below
        set_path(tree, key, list(value) if isinstance(value, tuple) else value)
    plan = plan_from_dict(tree, source=ci.path)
    if ci.task == "preference" and not fused:
        plan.training.fused_loss = False  # the tool's DPO trainer materialises the logits
    if method == "qlora" and "strategy.qlora_upcast" not in settings:
        from planner.rules.precision import qlora_upcast_for

        plan.strategy.qlora_upcast = qlora_upcast_for(setup_from_plan(plan), spec).value
    return plan


def estimate_config(ci: ConfigImport, spec, hardware, *, tokens: int, search: bool = True):
    """The StrategyEstimate of the config as its tool runs it (``ftplan estimate --config``)."""
    from planner.convert import setup_from_plan
    from planner.estimate import estimate

    plan = tool_plan(ci, spec, hardware)
    setup = setup_from_plan(plan)  # training.micro_batch counts rows on both sides (a DPO row is a pair)
    t = plan.training
    epochs, steps = t.epochs, None
    if t.max_steps > 0:
        per_step = setup.micro_batch * setup.sequences_per_row * setup.gpus * t.grad_accum * t.seq_len
        tokens, epochs, steps = t.max_steps * per_step, 1.0, t.max_steps
    return estimate(spec, setup, hardware, tokens=tokens, epochs=epochs, search=search, steps=steps)


def config_json(ci: ConfigImport) -> dict:
    """What ``estimate --config --json`` adds to ``estimate --json``."""
    out = {"config": {"path": ci.path, "format": ci.format, "model": ci.model, "task": ci.task, "processes": ci.gpus,
                      "data": ci.data, "notes": ci.notes},
           "mapped": ci.mapped, "unsupported_keys": ci.unsupported_keys, "ignored_keys": ci.ignored_keys}
    return out


def export_config(plan_dir: str | os.PathLike, to: str, out: str | os.PathLike | None = None) -> list[Path]:
    """Write a config for ``to`` (axolotl | llama-factory) carrying every decision of the plan in ``plan_dir``;
    returns the files written (the config, a DeepSpeed JSON for ZeRO plans, LLaMA-Factory's dataset_info.json)."""
    from planner.interop.export import export

    return export(plan_dir, to, out)

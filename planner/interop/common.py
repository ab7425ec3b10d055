"""What the axolotl and LLaMA-Factory mappings share: the row type of their mapping tables, value converters,
the Hugging Face optimizer names, and the DeepSpeed / accelerate files a config points to.

A mapping table (``planner/interop/axolotl.py`` ``ROWS``, ``planner/interop/llama_factory.py`` ``ROWS``) is a
list of :class:`Row`: the tool's keys, the plan.yaml keys they decide, one converter each way and a note that
says which unit each side counts in. The reader (``read_config``) and the exporter (``export_config``) walk the
same rows, so the two directions cannot disagree; ``tests/test_interop.py`` round-trips every row.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import FtplanError

FORMATS = ("axolotl", "llama-factory")
LORA_FAMILY = ("lora", "dora", "qlora")


class BadValue(Exception):
    """A tool value ftplan cannot read (or a plan value the tool cannot hold); ``key`` names the key."""

    def __init__(self, key: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.key, self.message, self.hint = key, message, hint


@dataclass
class Ctx:
    """What a row's converters see besides their own values.

    ``values``: plan values by dotted key (reading: those read so far, in table order; writing: the whole
    plan). ``bf16_ok``: the hardware runs bf16 (resolves axolotl's ``bf16: auto``). ``gpus``: processes of the
    run (configs rarely say; ``--gpus``). ``base``: the config file's folder (relative DeepSpeed paths).
    Readers add to ``unsupported`` (key -> why it matters and how it is estimated) and ``notes``."""

    values: dict[str, Any] = field(default_factory=dict)
    bf16_ok: bool = True
    gpus: int = 1
    base: Path | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    accelerate: dict | None = None  # an accelerate config (LLaMA-Factory's FSDP and process count)

    def get(self, key: str, default=None):
        value = self.values.get(key)
        return default if value is None else value

    @property
    def method(self) -> str:
        return self.get("strategy.method", "lora")

    @property
    def task(self) -> str:
        return self.get("task", "sft")

    @property
    def lora(self) -> bool:
        return self.method in LORA_FAMILY


Reader = Callable[[dict, Ctx], dict]
Writer = Callable[[dict, Ctx], dict]


@dataclass(frozen=True)
class Row:
    """One line of a mapping table.

    ``read(values, ctx)``: the tool's values of ``tool`` keys present in the config (absent keys are not in the
    dict) -> plan values, the tool's defaults included (what the tool runs). ``write(values, ctx)``: the plan's
    values of ``plan`` keys -> tool values (None is left out of the config).
    ``always``: the row decides even when the config leaves its keys out (no ``adapter`` is full fine-tuning,
    no DeepSpeed/FSDP is data parallel): its values count as the config's settings, not the tool's defaults.
    ``semantics``: how the tool runs rather than what the user chose (its loss path, its QLoRA upcast): used
    to estimate the config, never to override ftplan's own rules in ``ftplan plan --config``.
    ``planned``: False for values reported but not planned from (the dataset path comes from ``--data``).
    """

    tool: tuple[str, ...]
    plan: tuple[str, ...]
    read: Reader
    write: Writer
    note: str
    always: bool = False
    semantics: bool = False
    planned: bool = True


# ----------------------------------------------------------------------------------------------------------
# Value converters (tool -> plan): each raises BadValue naming the key
# ----------------------------------------------------------------------------------------------------------


def as_bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadValue(key, f"must be true or false, got {value!r}")


def as_int(key: str, value, *, minimum: int | None = 1) -> int:
    out = None
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        out = int(value)
    if out is None:
        raise BadValue(key, f"must be an integer, got {value!r}")
    if minimum is not None and out < minimum:
        raise BadValue(key, f"must be at least {minimum}, got {out}")
    return out


def as_float(key: str, value, *, lo: float | None = None, hi: float | None = None) -> float:
    """A number; strings such as '2e-4' count (YAML 1.1 reads them as strings, the tools convert them)."""
    out = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            out = None
    if out is None or not math.isfinite(out):
        raise BadValue(key, f"must be a number, got {value!r}")
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise BadValue(key, f"must be within {lo:g}..{hi:g}, got {out:g}")
    return out


def as_names(key: str, value) -> list[str]:
    """A list of names, from a YAML list or a comma-separated string (LLaMA-Factory's form)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise BadValue(key, f"must be a list of names, got {value!r}")


def as_str(key: str, value) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise BadValue(key, f"must be a non-empty string, got {value!r}")


def on(value) -> bool:
    """A key counts as set when it holds something other than null/false/empty (a disabled option is off)."""
    return value not in (None, False, "", [], {}, "none", "None")


# ----------------------------------------------------------------------------------------------------------
# Optimizers: transformers' OptimizerNames (training_args.py) <-> planner.memory.OPTIMIZERS
# ----------------------------------------------------------------------------------------------------------

# The first name of each ftplan optimizer is the one written on export. ``adamw_torch`` is torch's AdamW with its
# default multi-tensor (foreach) step on CUDA, ftplan's adamw_foreach; ``adamw_torch_fused`` its fused step.
HF_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "adamw": ("adamw_torch_fused",),
    "adamw_foreach": ("adamw_torch",),
    "adamw_8bit": ("adamw_bnb_8bit", "adamw_8bit"),
    "paged_adamw_8bit": ("paged_adamw_8bit",),
    "paged_adamw_32bit": ("paged_adamw_32bit",),
    "sgd": ("sgd",),
    "adafactor": ("adafactor",),
}
FROM_HF_OPTIMIZER = {hf: ours for ours, names in HF_OPTIMIZERS.items() for hf in names}


def optimizer_from(key: str, value) -> str:
    name = as_str(key, value)
    if name not in FROM_HF_OPTIMIZER:
        raise BadValue(key, f"'{name}' is not an optimizer ftplan models",
                       hint=f"one of: {', '.join(FROM_HF_OPTIMIZER)}")
    return FROM_HF_OPTIMIZER[name]


def optimizer_to(value: str) -> str:
    return HF_OPTIMIZERS[value][0]


# transformers.SchedulerType values ftplan plans (planner.plan.CHOICES['training.lr_scheduler']).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def scheduler_from(key: str, value, c: Ctx) -> dict:
    name = as_str(key, value)
    if name not in SCHEDULERS:
        c.notes.append(f"{key}: {name} is not a schedule ftplan plans (no effect on memory or time; not carried)")
        return {}
    return {"training.lr_scheduler": name}


# ----------------------------------------------------------------------------------------------------------
# DeepSpeed and accelerate files
# ----------------------------------------------------------------------------------------------------------


def find_file(ref: str, base: Path | None) -> Path | None:
    """A path as the tools resolve it (relative to the working directory they are launched from), else
    relative to the config's folder or one of its parents (configs in a repository's ``examples/`` name files
    from the repository root)."""
    p = Path(os.path.expanduser(ref))
    if p.is_absolute():
        return p if p.is_file() else None
    candidates = [Path.cwd() / p]
    if base is not None:
        candidates += [folder / p for folder in (base, *list(base.parents)[:4])]
    return next((c for c in candidates if c.is_file()), None)


def load_json(path: Path, key: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadValue(key, f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise BadValue(key, f"{path}: must hold a JSON object")
    return data


_ZERO_NAME = re.compile(r"(?:zero|_z|^z)[_-]?([0-3])(?![0-9])", re.IGNORECASE)


def deepspeed_settings(key: str, ref, c: Ctx) -> dict:
    """strategy.distribution/offload_* of a DeepSpeed config (a path or an inline object): the
    ``zero_optimization`` stage and its ``offload_optimizer`` / ``offload_param`` devices (DeepSpeed's config
    JSON, deepspeed/runtime/zero/config.py). Stage 0 is plain data parallelism."""
    if isinstance(ref, Mapping):
        ds, where = dict(ref), "inline"
    else:
        name = as_str(key, ref)
        found = find_file(name, c.base)
        if found is None:
            m = _ZERO_NAME.search(Path(name).name)
            if m is None:
                raise BadValue(key, f"{name}: file not found (looked in the working directory and beside the "
                                    "config), and its name does not say the ZeRO stage",
                               hint="run from the folder the path is relative to")
            stage = int(m.group(1))
            c.notes.append(f"{key}: {name} not found (looked in the working directory and beside the config): "
                           f"ZeRO stage {stage} taken from the file name; its offload settings are unknown, "
                           "estimated without offload")
            c.unsupported[key] = f"{name} not found: offload settings unknown (estimated without offload)"
            return _zero(stage, False, False, c)
        ds, where = load_json(found, key), str(found)
    zero = ds.get("zero_optimization") or {}
    if not isinstance(zero, Mapping):
        raise BadValue(key, f"{where}: zero_optimization must be an object")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise BadValue(key, f"{where}: zero_optimization.stage must be 0-3, got {stage!r}")

    def device(section: str) -> str:
        value = zero.get(section) or {}
        dev = str(value.get("device", "none")).lower() if isinstance(value, Mapping) else "none"
        if dev == "nvme":
            c.unsupported[f"{key}.{section}"] = "NVMe offload: estimated as CPU offload"
        return dev

    opt, par = device("offload_optimizer") in ("cpu", "nvme"), device("offload_param") in ("cpu", "nvme")
    if par and stage != 3:
        c.notes.append(f"{key}: offload_param applies to ZeRO-3 only (DeepSpeed ignores it at stage {stage})")
        par = False
    if where != "inline":
        c.notes.append(f"{key}: read {where} (ZeRO stage {stage}"
                       f"{', optimizer offload' if opt else ''}{', parameter offload' if par else ''})")
    return _zero(stage, opt, par, c)


def _zero(stage: int, opt: bool, par: bool, c: Ctx) -> dict:
    dist = f"zero{stage}" if stage else ("ddp" if c.gpus > 1 else "single")
    return {"strategy.distribution": dist, "strategy.offload_optimizer": opt and bool(stage),
            "strategy.offload_params": par}


def deepspeed_dict(c: Ctx) -> dict:
    """The DeepSpeed object of a ZeRO plan, as ftplan renders it for its own runs (planner.render)."""
    from planner.render import deepspeed_dict as render_ds

    return render_ds(c.values["__plan__"])


def load_accelerate_config(path: str | os.PathLike) -> dict:
    """An ``accelerate config`` YAML (how LLaMA-Factory runs FSDP: ``accelerate launch --config_file``)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FtplanError(f"--accelerate-config {p}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FtplanError(f"--accelerate-config {p}: not a readable YAML file ({exc})") from None
    if not isinstance(data, dict):
        raise FtplanError(f"--accelerate-config {p}: must hold a mapping")
    return data


def fsdp_settings(key: str, full_shard: bool, offload: bool, c: Ctx, *, checkpointing: bool | None = None) -> dict:
    """strategy.* of an FSDP setup. ftplan models full sharding (FSDP2 traces, planner/sharding.py); FSDP's CPU
    offload moves parameters, gradients and optimizer states (torch CPUOffload / CPUOffloadPolicy)."""
    if not full_shard:
        raise BadValue(key, "only FULL_SHARD (reshard_after_forward: true) is modelled",
                       hint="SHARD_GRAD_OP keeps whole parameters between forward and backward; NO_SHARD is DDP")
    if c.gpus < 2:
        raise BadValue(key, "FSDP shards over several processes, but the run has 1",
                       hint="pass --gpus N (the processes the config is launched with)")
    out = {"strategy.distribution": "fsdp", "strategy.offload_optimizer": offload, "strategy.offload_params": offload}
    if checkpointing is not None:
        out["strategy.gradient_checkpointing"] = checkpointing
    return out


def no_sharding(c: Ctx) -> dict:
    return {"strategy.distribution": "ddp" if c.gpus > 1 else "single", "strategy.offload_optimizer": False,
            "strategy.offload_params": False}


# ----------------------------------------------------------------------------------------------------------
# Shared row pieces
# ----------------------------------------------------------------------------------------------------------


def mixed_for(method: str, precision: str, distribution: str, *, tool_upcasts: bool) -> bool:
    """Whether a full fine-tuning keeps fp32 master weights: DeepSpeed's bf16/fp16 optimizer keeps fp32
    partitions, accelerate upcasts FSDP's trainable parameters when the Trainer's bf16 is on
    (planner/sharding.py); elsewhere it depends on the tool (``tool_upcasts``)."""
    if method != "full" or precision == "fp32":
        return False
    if distribution in ("zero1", "zero2", "zero3", "fsdp"):
        return True
    return tool_upcasts


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'training': {'lr': 1e-4}} -> {'training.lr': 1e-4}; lists and the decision/warning lists stay whole."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in ("columns", "skipped", "versions"):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def show(value) -> str:
    """A tool value as it reads in a config (for notes and the review)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def classify(key: str, value, mapped: set[str], unsupported: Mapping[str, str], ignored: tuple[str, ...],
             ignored_prefixes: tuple[str, ...], refused: Mapping[str, str]) -> tuple[str, str]:
    """('mapped'|'unsupported'|'ignored', why) of a config key that no row consumed or that rows consumed.

    A key with no effect on memory or time is ignored (listed, not dropped silently); a key that changes memory
    but is not modelled is unsupported when set (a disabled option is ignored); a key ftplan cannot estimate at
    all (another trainer, another quantization) is refused by the caller; an unknown key is reported as
    unsupported, since ftplan cannot tell what it does."""
    if key in mapped:
        return "mapped", ""
    if key in refused and on(value):
        return "refused", refused[key]
    if key in unsupported:
        return ("unsupported", unsupported[key]) if on(value) else ("ignored", "off")
    if key in ignored or key.startswith(ignored_prefixes) or key in refused:
        return "ignored", ""
    if not on(value):
        return "ignored", "empty"
    return "unsupported", "not a key ftplan knows: its effect on memory and time is not modelled"

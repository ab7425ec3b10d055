"""Checks that need no torch: run before the heavy imports, so bad input fails in a fraction of a second."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from planner.errors import FtplanError
from planner.plan import Plan


def resolve_relative_paths(plan: Plan, plan_dir: Path) -> Plan:
    """Relative model/data paths in a hand-written plan.yaml: the plan folder first, then the cwd.

    (``ftplan plan`` writes absolute paths; launch.sh changes into the plan folder before running.)
    """

    def fix(value: str | None) -> str | None:
        if not value or Path(value).is_absolute() or Path(value).exists():
            return value
        candidate = plan_dir / value
        return str(candidate) if candidate.exists() else value

    model = dataclasses.replace(plan.model, name_or_path=fix(plan.model.name_or_path))
    data = dataclasses.replace(plan.data, path=fix(plan.data.path), general_path=fix(plan.data.general_path))
    return dataclasses.replace(plan, model=model, data=data)


def check_inputs(plan: Plan) -> None:
    """Fail fast, before any heavy import, on paths that cannot exist and unsupported combinations."""
    check_supported(plan)
    name = plan.model.name_or_path
    looks_local = name.startswith(("/", "./", "../", "~")) or Path(name).exists()
    if looks_local and not Path(name).expanduser().is_dir():
        raise FtplanError(
            f"model.name_or_path '{name}': no such model folder",
            hint="fix the path in plan.yaml or re-plan with --model",
        )
    for what, path in (("data.path", plan.data.path), ("data.general_path", plan.data.general_path)):
        if path and not Path(path).is_file():
            raise FtplanError(f"{what} '{path}': no such file", hint="fix the path in plan.yaml or re-plan")


def check_supported(plan: Plan) -> None:
    """Combinations the libraries cannot train, caught before loading anything.

    Pure fp16 full fine-tuning: the Trainer's GradScaler refuses to unscale fp16 gradients
    ("Attempting to unscale FP16 gradients", torch/amp/grad_scaler.py); fp16 needs fp32 master
    weights (Micikevicius et al. 2018), i.e. ``mixed_precision: true``.
    """
    s = plan.strategy
    if s.method == "full" and s.precision == "fp16" and not s.mixed_precision:
        raise FtplanError(
            "strategy: full fine-tuning in pure fp16 cannot train (fp16 gradients cannot be unscaled)",
            hint="set strategy.mixed_precision: true (fp32 master weights) or strategy.precision: bf16",
        )

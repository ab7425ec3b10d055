"""The planner functions the wizard calls, injected so tests can fake the hardware (or anything else).

Every field defaults to the real function the CLI uses, imported lazily at call time, so building a
:class:`WizardServices` is instant and a test can replace only ``probe`` (e.g. "1x A100-80GB").
The wizard computes nothing itself: model facts, data profile, hardware, estimates, decisions and
rendering all come from here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name`` resolved on first call (the planner modules import nothing heavy either)."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"{module}.{name}"
    return call


def catalog_model_names() -> list[str]:
    """Model catalog hub ids and aliases, for the model step's suggestions."""
    from planner.model_spec import catalog

    names = set(catalog())
    for entry in catalog().values():
        names.update(entry.get("aliases", ()))
    return sorted(names)


def catalog_gpu_names() -> list[str]:
    """GPU catalog names, for the hardware step's picker."""
    from planner.hardware import gpu_catalog

    return list(gpu_catalog())


def default_run_argv(plan_dir: Path) -> list[str]:
    """The executor as a subprocess: exactly `ftplan run PLAN_DIR` (it checkpoints on SIGINT)."""
    return [sys.executable, "-m", "ftplan.cli", "run", str(plan_dir)]


# The real functions, resolved on first call (module constants: dataclass defaults must be values).
_LOAD_MODEL_SPEC = _lazy("planner.model_spec", "load_model_spec")
_PROFILE_DATA = _lazy("planner.dataset.profile", "profile_data")
_PROBE = _lazy("planner.hardware", "probe")
_RESOLVE_HARDWARE = _lazy("planner.hardware", "resolve_hardware")
_MAKE_PLAN = _lazy("planner.rules", "make_plan")
_RENDER_PLAN_YAML = _lazy("planner.render", "render_plan_yaml")
_RENDER_REPORT = _lazy("planner.render", "render_report")
_WRITE_PLAN_FOLDER = _lazy("planner.render", "write_plan_folder")


@dataclass
class WizardServices:
    """Functions the wizard calls; defaults are the real planner functions the CLI calls."""

    load_model_spec: Callable[..., Any] = _LOAD_MODEL_SPEC
    model_names: Callable[[], list[str]] = catalog_model_names
    profile_data: Callable[..., Any] = _PROFILE_DATA
    probe: Callable[[], Any] = _PROBE
    resolve_hardware: Callable[..., Any] = _RESOLVE_HARDWARE
    gpu_names: Callable[[], list[str]] = catalog_gpu_names
    make_plan: Callable[..., Any] = _MAKE_PLAN
    render_plan_yaml: Callable[[Any], str] = _RENDER_PLAN_YAML
    render_report: Callable[[Any], str] = _RENDER_REPORT
    write_plan_folder: Callable[..., Any] = _WRITE_PLAN_FOLDER
    run_argv: Callable[[Path], list[str]] = default_run_argv

"""Out-of-memory fallbacks: apply the plan's next ``Fallback`` in order, write the changed plan, say why.

The planner lists the fallbacks (smaller micro-batch with more accumulation, then activation
checkpointing, then the next strategy); the executor only applies them, in that order, and only when
the OOM happens in the first steps (later OOMs are not a sizing problem a fallback can fix blindly:
fragmentation, a long outlier batch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from executor.paths import RunPaths
from planner.errors import FtplanError, first_line
from planner.plan import Decision, Fallback, Plan, plan_from_dict, plan_to_dict, save_plan, set_path
from planner.render import rerender_configs

# An OOM within this many optimizer steps of the attempt's start is "in the first steps": the peak of
# a training step is reached in step 1 (weights + grads + optimizer states all live once the first
# optimizer.step() has run), later steps only repeat it; a margin covers eval and the first save.
EARLY_OOM_STEPS = 10

T = TypeVar("T")


class OutOfMemoryAtStep(Exception):
    """Raised by a training attempt: the OOM and the optimizer step (of this attempt) it happened at."""

    def __init__(self, steps_done: int, cause: BaseException | str):
        self.steps_done = steps_done
        self.cause = first_line(cause)
        super().__init__(f"out of memory after {steps_done} optimizer steps: {self.cause}")


def is_oom(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA caching allocator) or an allocator RuntimeError saying so."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - executor always has torch
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def relative_to(plan: Plan, fb: Fallback) -> Fallback | None:
    """The fallback restated from the plan's actual values (a --set or a hand edit may have changed them
    since planning): halving means halving the current micro-batch; a step that would not shrink anything
    (micro-batch already 1, checkpointing already on) is None."""
    t, change = plan.training, dict(fb.set)
    keys = set(change)
    if keys <= {"training.micro_batch", "training.grad_accum"}:
        if t.micro_batch <= 1:
            return None
        mb = t.micro_batch // 2
        accum = max(1, round(t.micro_batch * t.grad_accum / mb))
        return Fallback({"training.micro_batch": mb, "training.grad_accum": accum},
                        f"halve the micro-batch to {mb}, accumulate {accum} (from {t.micro_batch} x {t.grad_accum})")
    if keys == {"strategy.gradient_checkpointing"} and plan.strategy.gradient_checkpointing:
        return None
    return fb


def next_fallback(plan: Plan) -> tuple[Plan, Fallback | None]:
    """(plan without the fallbacks that no longer shrink it, the next applicable one restated, or None)."""
    while plan.fallbacks:
        fb = relative_to(plan, plan.fallbacks[0])
        if fb is not None:
            return plan, fb
        plan = dataclasses.replace(plan, fallbacks=plan.fallbacks[1:])
    return plan, None


def apply_next_fallback(plan: Plan, why: str, fb: Fallback | None = None) -> Plan:
    """A new, validated Plan with the next applicable fallback applied (restated from the plan's actual
    values), removed from the list, and the change recorded as a decision."""
    if fb is None:
        plan, fb = next_fallback(plan)
        if fb is None:
            raise FtplanError("no fallback left in plan.yaml that shrinks this plan")
    data = plan_to_dict(plan)
    for path, value in fb.set.items():
        set_path(data, path, value)
    data["fallbacks"] = data["fallbacks"][1:]
    data["decisions"] = data["decisions"] + [
        plan_to_dict(
            Decision(field=path, value=value, reason=f"{why}: {fb.reason}", source="executor OOM fallback")
        )
        for path, value in fb.set.items()
    ]
    new = plan_from_dict(data, source="plan.yaml after fallback")
    return _reestimated(new)


def _reestimated(plan: Plan) -> Plan:
    """The estimate follows the fallback (planner.convert: the rules' converter and estimator), so that the
    run's estimate-vs-measured table compares with the settings that ran. A model whose architecture
    cannot be read keeps the planned figures (the run itself is not affected)."""
    from planner.convert import with_memory_estimate
    from planner.model_spec import load_model_spec

    try:
        spec = load_model_spec(plan.model.name_or_path, offline=True)
    except FtplanError:
        return plan
    return with_memory_estimate(plan, spec)


@dataclass
class FallbackRecord:
    step: int
    error: str
    set: dict
    reason: str


def train_with_fallbacks(
    plan: Plan,
    paths: RunPaths,
    attempt: Callable[[Plan], T],
    log: Callable[[str], None] = print,
    free_memory: Callable[[], None] | None = None,
) -> tuple[T, Plan, list[FallbackRecord]]:
    """Run ``attempt(plan)``; on an early OOM apply the next fallback, save plan.yaml, and retry.

    ``attempt`` must raise :class:`OutOfMemoryAtStep` for an OOM. Returns (result, final plan, applied).
    """
    applied: list[FallbackRecord] = []
    while True:
        try:
            return attempt(plan), plan, applied
        except OutOfMemoryAtStep as exc:
            oom = exc
            oom.__traceback__ = None  # drop the frames (and the model they hold) before freeing memory
        if free_memory is not None:
            free_memory()
        if oom.steps_done >= EARLY_OOM_STEPS:
            raise FtplanError(
                f"out of memory at optimizer step {oom.steps_done}, past the first steps where the plan's "
                "fallbacks apply",
                hint="lower training.micro_batch in plan.yaml (grad_accum up) and run again; it resumes",
            )
        plan, fb = next_fallback(plan)
        if fb is None:
            raise FtplanError(
                f"out of memory after {oom.steps_done} steps and no fallback left in plan.yaml",
                hint="re-plan with less GPU memory (--gpu-memory) or a smaller method (qlora)",
            )
        why = f"out of memory after {oom.steps_done} steps"
        plan = apply_next_fallback(plan, why, fb)
        save_plan(plan, paths.plan_yaml)
        if int(os.environ.get("RANK", "0")) == 0:
            rerender_configs(plan, paths.plan_dir)  # DeepSpeed/accelerate files follow the new plan.yaml
        record = FallbackRecord(oom.steps_done, oom.cause, dict(fb.set), fb.reason)
        applied.append(record)
        paths.output.mkdir(parents=True, exist_ok=True)
        with paths.fallback_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"time": time.time(), **record.__dict__}, default=str) + "\n")
        log(f"ftplan: {why}; applying fallback {fb.set} ({fb.reason}); plan.yaml updated")

"""Sizing one candidate setup: the largest micro-batch that fits (checkpointing only when nothing fits
without it), the accumulation that reaches the effective batch, the optimizer steps, and the estimate of the
result. Also the estimator interface the rules call (``Estimators``) and the context every phase shares.
"""


from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from planner.convert import memory_values
from planner.plan import (
    EstimateSection,
    Plan,
    world_size,
)
from planner.rules import batch, precision
from planner.rules.common import Choice, hours_text
from planner.rules.strategy import Candidate


@dataclass(frozen=True)
class Option:
    """One candidate setup, sized (micro-batch, checkpointing, accumulation) and estimated."""

    candidate: Candidate
    estimate: object  # StrategyEstimate
    fits: bool
    micro_batch: int
    gradient_checkpointing: bool
    grad_accum: int
    effective: Choice
    steps: int

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def family(self) -> str:
        return self.candidate.family


@dataclass(frozen=True)
class PlanContext:
    """What the decisions share: the inputs and the data-derived numbers every later phase needs."""

    request: object
    spec: object
    hardware: object
    profile: object
    general: object | None  # DataProfile of --general-data
    gpu: bool
    world: int  # GPUs in all (1 on CPU)
    val_rows: int
    train_rows: int
    seq_len: int
    truncated: float  # share of examples longer than seq_len
    packing: bool
    replay: float
    train_units: int  # examples, or packed sequences, per epoch (incl. replay)
    tokens_per_epoch: int
    epochs: float

    @property
    def task(self) -> str:
        return self.request.task

    @property
    def goal(self) -> str:
        return self.request.goal


@dataclass(frozen=True)
class Estimators:
    """The estimator functions the rules call: ``full`` = planner.estimate.estimate (memory, verdict,
    time, cost) and ``memory`` = planner.memory.estimate_memory (bytes only: hardware-independent,
    so batch searches and the alternatives scan reuse one memory figure across GPU types)."""

    full: Callable
    memory: Callable

    def with_steps(self, spec, setup, hardware, *, tokens, epochs, steps: int):
        """``full`` with the optimizer steps the rules counted (the time model's per-step overhead);
        estimators without a ``steps`` keyword (test stubs) get the call without it."""
        import inspect

        try:
            accepts = "steps" in inspect.signature(self.full).parameters
        except (TypeError, ValueError):
            accepts = False
        extra = {"steps": steps} if accepts else {}
        return self.full(spec, setup, hardware, tokens=tokens, epochs=epochs, **extra)

    def fits(self, spec, setup, hardware) -> bool:
        from planner.estimate import SAFETY_MARGIN, verdict_for

        mem = self.memory(spec, setup)
        if hardware.gpu is None:  # CPU training: the same bytes live in host RAM
            return mem.total <= (1.0 - SAFETY_MARGIN) * host_ram(hardware)
        if mem.cpu_bytes and hardware.detected and hardware.cpu_memory_bytes:
            # offload on this (probed) machine: its host RAM must hold the offloaded states
            if mem.cpu_bytes > (1.0 - SAFETY_MARGIN) * hardware.cpu_memory_bytes:
                return False
        return verdict_for(mem.total, hardware) == "fits"


UNKNOWN_HOST_RAM = 16_000_000_000  # when the probe could not read it: a common laptop, to stay safe


def host_ram(hardware) -> int:
    """Host RAM one training process may use: the ranks of a CPU plan with several processes per node
    (--cpu-processes) share it, each holding what the estimate counts for one."""
    ram = hardware.cpu_memory_bytes or UNKNOWN_HOST_RAM
    return ram // max(1, hardware.count) if hardware.gpu is None else ram


def default_estimator() -> Estimators:
    """planner.estimate.estimate without its max-batch/max-seq searches (the rules size batches
    themselves)."""
    from functools import partial

    from planner.estimate import estimate
    from planner.memory import estimate_memory

    return Estimators(full=partial(estimate, search=False), memory=estimate_memory)


def as_estimators(estimator) -> Estimators:
    """An Estimators from a plain ``estimate``-like callable (tests inject a stub)."""
    if estimator is None:
        return default_estimator()
    if isinstance(estimator, Estimators):
        return estimator
    from planner.hardware import GPUType, Hardware

    big = GPUType("any", 1 << 50, 1.0, 1.0, 1.0, (9, 0), 0.0)
    probe_hw = Hardware(gpu=big, count=1, free_memory_bytes=1 << 50, detected=False)
    return Estimators(
        full=estimator,
        memory=lambda spec, setup: estimator(spec, setup, probe_hw, tokens=0, epochs=1.0).memory,
    )


def fit_ok(est, gpu: bool, hardware=None) -> bool:
    if gpu:
        return est.verdict == "fits"
    from planner.estimate import SAFETY_MARGIN

    return est.verdict in ("fits", "cpu") and (
        hardware is None or est.memory.total <= (1.0 - SAFETY_MARGIN) * host_ram(hardware)
    )


def size_option(cand: Candidate, ctx: PlanContext, estimator: Estimators) -> Option:
    """Largest micro-batch that fits (without checkpointing if possible), then accumulation."""
    gpu = ctx.hardware.gpu is not None
    effective = batch.effective_batch_rule(
        cand.setup.method,
        ctx.task,
        ctx.train_rows,
        ctx.profile.tokens_mean,
        ctx.seq_len,
        ctx.packing,
        ctx.tokens_per_epoch,
    )
    world = cand.setup.gpus
    upper = max(1, min(batch.MAX_MICRO_BATCH, effective.value // world))

    def fits(mb: int, ckpt: bool) -> bool:
        # the accumulation this micro-batch implies: with it, gradients stay alive through every forward
        accum = batch.grad_accum_rule(effective.value, mb, world).value
        setup = cand.setup.with_(micro_batch=mb, gradient_checkpointing=ckpt, grad_accum=accum)
        return estimator.fits(ctx.spec, setup, ctx.hardware)

    ckpt = False
    mb = batch.fit_micro_batch(lambda m: fits(m, False), upper)
    if mb == 0:
        ckpt = True
        mb = batch.fit_micro_batch(lambda m: fits(m, True), upper)
    fits_any = mb > 0
    mb = max(mb, 1)
    accum = batch.grad_accum_rule(effective.value, mb, world).value
    steps = steps_for(ctx, mb * world * accum)
    final = estimator.with_steps(
        ctx.spec,
        cand.setup.with_(micro_batch=mb, gradient_checkpointing=ckpt, grad_accum=accum),
        ctx.hardware,
        tokens=ctx.tokens_per_epoch,
        epochs=ctx.epochs,
        steps=steps,
    )
    return Option(
        cand, final, fits_any and fit_ok(final, gpu, ctx.hardware), mb, ckpt, accum, effective, steps
    )


def steps_for(ctx: PlanContext, per_step: int) -> int:
    per_epoch = max(1, math.ceil(ctx.train_units / max(per_step, 1)))
    return max(1, math.ceil(per_epoch * ctx.epochs))


def free_bytes(opt: Option, hardware=None) -> int:
    if hardware is not None and hardware.gpu is None:
        return host_ram(hardware)
    e = opt.estimate
    return e.memory.total + e.headroom_bytes


def option_hours(opt: Option) -> str:
    return hours_text(opt.estimate.time_hours)


def with_precision(cand: Candidate, prec: str) -> Candidate:
    mixed = precision.mixed_precision_rule(cand.setup.method, prec).value
    return replace(cand, setup=cand.setup.with_(precision=prec, mixed_precision=mixed))


def with_upcast(cand: Candidate, spec) -> Candidate:
    if cand.setup.method != "qlora":
        return cand
    return replace(cand, setup=cand.setup.with_(qlora_upcast=precision.qlora_upcast_for(cand.setup, spec).value))


def estimate_section(est, steps: int) -> EstimateSection:
    return EstimateSection(
        **memory_values(est.memory),
        verdict=est.verdict,
        tokens=int(est.tokens),
        steps=int(steps),
        time_hours=_finite(est.time_hours),
        cost_usd=_finite(est.cost_usd),
        tokens_per_second=_finite(est.tokens_per_second),
    )


def _finite(x: float) -> float:
    """4 decimals, but 4 significant digits below 0.01 (a 2 s CPU run is 0.00056 h, not 0.0006)."""
    if not math.isfinite(x):
        return 0.0
    return round(float(x), 4) if abs(x) >= 0.01 else float(f"{x:.4g}")


def trained_tokens_and_steps(plan: Plan, ctx: PlanContext) -> tuple[int, float, int]:
    """(tokens per epoch, epochs, optimizer steps) the executor will run for ``plan``.

    Rows per epoch follow the plan's packing (an override may change it): packed rows of seq_len
    tokens, else one example per row (plus replay). ``training.max_steps > 0`` replaces the epochs
    (transformers TrainingArguments.max_steps): max_steps optimizer steps of micro_batch x world x
    grad_accum rows, each carrying seq_len tokens (packed) or the data's mean trained length."""
    t = plan.training
    world = world_size(plan)
    rows_per_step = t.micro_batch * max(1, world) * t.grad_accum
    units = math.ceil(ctx.tokens_per_epoch / t.seq_len) if t.packing else math.ceil(
        ctx.train_rows / (1 - ctx.replay))
    per_row = ctx.tokens_per_epoch / max(1, units)
    if t.max_steps > 0:
        return int(round(t.max_steps * rows_per_step * per_row)), 1.0, t.max_steps
    per_epoch = max(1, math.ceil(units / max(rows_per_step, 1)))
    return ctx.tokens_per_epoch, t.epochs, max(1, math.ceil(per_epoch * t.epochs))

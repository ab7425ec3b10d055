"""Other hardware for the same plan (the GPU catalog searched for the cheapest and the fastest
configuration that fits) and the answer when nothing fits (``NoFitError`` with those alternatives).
"""


from __future__ import annotations

import math
from dataclasses import dataclass

from planner.errors import FtplanError
from planner.memory import TrainSetup
from planner.rules import precision, strategy
from planner.rules.common import hours_text
from planner.rules.sizing import Estimators, Option, PlanContext
from planner.units import gib


@dataclass(frozen=True)
class Alternative:
    """The same method on other hardware from the GPU catalog."""

    gpu: str
    count: int
    strategy: str
    time_hours: float
    cost_usd: float
    memory_total: int
    verdict: str


def find_alternatives(spec, hardware, chosen: Option, ctx: PlanContext, estimator: Estimators, counts=(1, 2, 4, 8)):
    """Cheapest and fastest hardware from the GPU catalog for the chosen method (any distribution).

    Memory does not depend on the GPU type, so each (count, setup, checkpointing) is sized once; the
    time/cost estimate runs only for the setups that fit: per GPU type, the fewest GPUs that fit
    (cheapest) and the most (fastest).
    """
    from planner.estimate import verdict_for
    from planner.hardware import Hardware, gpu_catalog

    method = chosen.candidate.setup.method
    sized: dict[tuple[int, str], list[tuple[str, TrainSetup, int]]] = {}
    for n in counts:
        for prec in ("bf16", "fp16"):
            base = chosen.candidate.setup.with_(
                gpus=n,
                precision=prec,
                micro_batch=1,
                grad_accum=1,
                mixed_precision=precision.mixed_precision_rule(method, prec).value,
            )
            rows = []
            for cand in strategy.candidates(base, n, True, allow_offload=False):
                if cand.setup.method != method:
                    continue
                for ckpt in (False, True):
                    setup = cand.setup.with_(gradient_checkpointing=ckpt)
                    rows.append((cand.name, setup, estimator.memory(spec, setup).total))
            sized[(n, prec)] = rows
            if prec == "bf16":  # fp16 takes the same bytes: reuse the sizes
                sized[(n, "fp16")] = [(nm, st.with_(precision="fp16"), tot) for nm, st, tot in rows]
                break
    found: list[Alternative] = []
    for gpu in gpu_catalog().values():
        if gpu.generic:
            continue
        prec = "bf16" if gpu.bf16 else "fp16"
        fitting_counts = []
        for n in counts:
            hw = Hardware(gpu=gpu, count=n, free_memory_bytes=gpu.memory_bytes, detected=False)
            hit = next(((nm, st) for nm, st, tot in sized[(n, prec)] if verdict_for(tot, hw) == "fits"), None)
            if hit:
                fitting_counts.append((n, hw, hit))
        for n, hw, (name, setup) in {id(x): x for x in fitting_counts[:1] + fitting_counts[-1:]}.values():
            e = estimator.full(spec, setup, hw, tokens=ctx.tokens_per_epoch, epochs=ctx.epochs)
            if e.verdict == "fits" and math.isfinite(e.time_hours):
                found.append(
                    Alternative(gpu.name, n, name, e.time_hours, e.cost_usd, e.memory.total, e.verdict)
                )
    if not found:
        return {"cheapest": None, "fastest": None}
    return {
        "cheapest": min(found, key=lambda a: (a.cost_usd, a.time_hours)),
        "fastest": min(found, key=lambda a: (a.time_hours, a.cost_usd)),
    }


class NoFitError(FtplanError):
    """Nothing fits the hardware (or there is no GPU): names what would do."""

    def __init__(self, message: str, *, hint: str | None = None, alternatives=None):
        self.alternatives = alternatives or {}
        super().__init__(message, hint=hint)


def _alt_text(a: Alternative) -> str:
    return f"{a.count}x {a.gpu} ({a.strategy}, {hours_text(a.time_hours)}, ${a.cost_usd:.2f})"


def no_fit_error(spec, hardware, options, ctx, estimator) -> NoFitError:
    size = f"{spec.param_counts().total / 1e9:.2f}B-parameter"
    smallest = min(options, key=lambda o: o.estimate.memory.total) if options else None
    probe = smallest or options[0]
    alts = {}
    for method_opt in sorted(options, key=lambda o: o.estimate.memory.total):
        alts = find_alternatives(spec, hardware, method_opt, ctx, estimator)
        if alts.get("cheapest"):
            break
    cheap, fast = alts.get("cheapest"), alts.get("fastest")
    would = ""
    if cheap:
        would = f"; cheapest that fits: {_alt_text(cheap)}"
        if fast and (fast.gpu, fast.count) != (cheap.gpu, cheap.count):
            would += f"; fastest: {_alt_text(fast)}"
    if hardware.gpu is None:
        hours = hours_text(probe.estimate.time_hours)
        return NoFitError(
            f"no GPU found: fine-tuning the {size} model {spec.name} needs a GPU (a CPU run would take "
            f"{hours}){would}",
            hint="pass --gpu NAME [--gpus N] to plan for one",
            alternatives=alts,
        )
    return NoFitError(
        f"{spec.name} ({size}) does not fit {hardware.count}x {hardware.gpu.name} "
        f"({gib(hardware.free_memory_bytes)} free per GPU) with any strategy at {ctx.seq_len} tokens per "
        f"sequence: the smallest, "
        f"{probe.name}, needs {gib(probe.estimate.memory.total)}{would}",
        hint="use a bigger or more GPUs (--gpu/--gpus), or a smaller model",
        alternatives=alts,
    )

"""The OOM fallbacks a plan carries, in the order the executor applies them (executor/fallback.py):
a smaller micro-batch with more accumulation, then activation checkpointing, then the next strategy that fits.
"""


from __future__ import annotations

from planner.plan import (
    Fallback,
    LoraSection,
    Plan,
    plan_to_dict,
)
from planner.rules import batch, optim
from planner.rules.sizing import Option
from planner.units import gib
from planner.vocab import ADAPTER_METHODS


def fallbacks_for(
    plan: Plan,
    chosen: Option,
    options: list[Option],
    order: tuple[str, ...],
    lora_rules: LoraSection | None = None,
) -> list[Fallback]:
    """What the executor tries on out-of-memory, in order: halve the micro-batch (doubling accumulation,
    same effective batch), then gradient checkpointing, then the next setup that fits.

    A strategy switch keeps the distribution and offload settings, so launch.sh and the rendered
    accelerate/DeepSpeed files still apply (a different launcher would need a re-plan)."""
    out: list[Fallback] = []
    mb, accum = plan.training.micro_batch, plan.training.grad_accum
    target = mb * accum
    while mb > 1:
        mb, accum = mb // 2, accum * 2
        same = "same effective batch" if mb * accum == target else f"effective batch {mb * accum} vs {target}"
        out.append(
            Fallback(
                {"training.micro_batch": mb, "training.grad_accum": accum},
                f"halve the micro-batch to {mb}, accumulate {accum} ({same} per GPU)",
            )
        )
    if not plan.strategy.gradient_checkpointing:
        out.append(
            Fallback(
                {"strategy.gradient_checkpointing": True},
                "recompute activations (about +33% compute, activation memory ~sqrt)",
            )
        )
    rank = {f: i for i, f in enumerate(order)}
    same_launch = (
        chosen.candidate.setup.distribution,
        chosen.candidate.setup.offload_optimizer,
        chosen.candidate.setup.offload_params,
    )
    rest = [
        o
        for o in options
        if o.fits
        and o is not chosen
        and o.estimate.memory.total < chosen.estimate.memory.total
        and (
            o.candidate.setup.distribution,
            o.candidate.setup.offload_optimizer,
            o.candidate.setup.offload_params,
        )
        == same_launch
    ]
    rest.sort(key=lambda o: (rank.get(o.family, 9), o.estimate.memory.total))
    for nxt in rest[:2]:
        s = nxt.candidate.setup
        change: dict[str, object] = {
            "strategy.method": s.method,
            "strategy.mixed_precision": s.mixed_precision,
            "strategy.optimizer": s.optimizer,
            "strategy.gradient_checkpointing": True,
            "training.micro_batch": 1,
            "training.grad_accum": batch.grad_accum_rule(nxt.effective.value, 1, s.gpus).value,
            "strategy.qlora_upcast": s.qlora_upcast if s.method == "qlora" else True,
        }
        if s.method in ADAPTER_METHODS and plan.lora is None:
            change["lora"] = plan_to_dict(lora_rules or LoraSection())  # from full: the rules' LoRA shape
        if s.method != plan.strategy.method:
            change["training.lr"] = optim.lr_rule(s.method, plan.task, plan.model.total_params).value
        out.append(
            Fallback(change, f"switch to {nxt.name} ({gib(nxt.estimate.memory.total)} per GPU estimated)")
        )
    return out

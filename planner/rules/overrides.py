"""``--set`` overrides: applied to a plan, re-estimated, and warned about with numbers.

Keys that decide which setup the plan is made for (``PINNED_KEYS``) are handed to ``make_plan`` before it
decides (``pinned_overrides``), so their dependants are the rules' answers for them; the other keys replace
one value each, and ``apply_plan_overrides`` re-estimates the result and says what the change costs.
"""

from __future__ import annotations

import math
from dataclasses import replace

from planner.convert import setup_from_plan
from planner.plan import Decision, LoraSection, Plan, apply_overrides, get_path
from planner.rules import data, optim
from planner.rules.engine import PlanResult, _plain
from planner.rules.sizing import PlanContext, estimate_section, fit_ok, host_ram, trained_tokens_and_steps
from planner.units import gib
from planner.vocab import ADAPTER_METHODS, DISTRIBUTIONS, PRECISIONS

# --set keys that decide which setup is sized and estimated: the plan is made for them, so that every decision
# that depends on them (learning rate, weight decay, precision policy, optimizer, LoRA section, micro-batch,
# checkpointing, accumulation, fallbacks) is derived by the rules for the pinned value, not left as it was.
PINNED_KEYS: dict[str, tuple[str, ...]] = {
    "strategy.method": ("strategy.distribution", "strategy.mixed_precision", "strategy.optimizer",
                        "strategy.qlora_upcast", "strategy.gradient_checkpointing", "training.micro_batch",
                        "training.grad_accum", "training.lr", "training.weight_decay", "training.layerwise_lr_decay",
                        "lora.r", "lora.alpha", "lora.dropout", "lora.target_modules"),
    "strategy.distribution": ("strategy.offload_optimizer", "strategy.offload_params", "strategy.qlora_upcast",
                              "strategy.gradient_checkpointing", "training.micro_batch", "training.grad_accum"),
    "strategy.precision": ("strategy.mixed_precision", "strategy.gradient_checkpointing", "training.micro_batch",
                           "training.grad_accum"),
}
_PINNED_CHOICES = {"strategy.method": ("full", "lora", "dora", "qlora", "ia3", "prompt", "prefix"),
                   "strategy.distribution": DISTRIBUTIONS,
                   "strategy.precision": PRECISIONS}


def pinned_overrides(overrides) -> dict[str, str]:
    """The --set values that the plan is made for (see PINNED_KEYS); unknown values are left to the schema's
    one-line error when the override is applied."""
    if isinstance(overrides, list):
        from planner.plan import parse_set_options

        overrides = parse_set_options(overrides)
    out = {}
    for key in PINNED_KEYS:
        value = str((overrides or {}).get(key, "")).strip()
        if value in _PINNED_CHOICES[key]:
            out[key] = value
    return out


def apply_plan_overrides(
    result: PlanResult, overrides, estimator, ctx: PlanContext, lora_rules: LoraSection | None = None
) -> PlanResult:
    """Apply --set overrides, re-estimate, and warn (with numbers) when they break a rule or do not fit."""
    before = result.plan
    base = before
    if isinstance(overrides, list):
        from planner.plan import parse_set_options

        overrides = parse_set_options(overrides)
    if (
        overrides.get("strategy.method", "").strip() in ADAPTER_METHODS
        and before.lora is None
        and "lora" not in overrides
    ):
        base = replace(before, lora=lora_rules or LoraSection())  # switching to LoRA: the rules' LoRA shape
    plan = apply_overrides(base, overrides)
    derived = _follow_overrides(before, plan, overrides)
    warnings = list(plan.warnings)
    keys = list(overrides)
    decisions = []
    pinned = pinned_overrides(overrides)
    for d in plan.decisions:
        if d.field in pinned:  # make_plan planned for it: its dependants below are the rules' answers
            d = Decision(d.field, _plain(get_path(plan, d.field)),
                         "set by --set; the plan is made for it: the decisions that depend on it are re-derived",
                         "--set")
        elif d.field in keys:
            new = get_path(plan, d.field)
            d = Decision(
                d.field, _plain(new), f"set by --set (the rule chose {d.value!r}: {d.reason})", "--set"
            )
        decisions.append(d)
    for k in keys:
        if not any(d.field == k for d in decisions):
            decisions.append(Decision(k, _plain(get_path(plan, k)), "set by --set", "--set"))
    for k, reason in derived.items():
        decisions = [d for d in decisions if d.field != k]
        decisions.append(Decision(k, _plain(get_path(plan, k)), reason, "--set"))
    # the plan was made for the pinned values (make_plan): their dependants are the rules' answers for them
    for i, d in enumerate(decisions):
        by = [f"{k}={v}" for k, v in pinned.items() if d.field in PINNED_KEYS[k] and d.field not in keys]
        if by:
            decisions[i] = replace(d, reason=f"{d.reason} (re-derived for --set {', '.join(by)})")
    warnings += override_warnings(before, plan, result.hardware)
    if plan.training.seq_len != before.training.seq_len:  # the rows cut or left untrained follow the length
        data.check_trainable(result.profile, plan.training.seq_len, plan.task)
        cut, untrained = data.cut_rows(result.profile, plan.training.seq_len, plan.task)
        plan.data.truncated_rows, plan.data.untrained_rows = cut, untrained
        if cut or untrained:
            warnings.append(
                f"--set training.seq_len={plan.training.seq_len}: {cut} rows will be cut at the end, "
                f"{untrained} dropped (no trained token left)"
            )
    setup = setup_from_plan(plan)
    tokens, epochs, steps = trained_tokens_and_steps(plan, ctx)
    est = estimator.with_steps(result.spec, setup, result.hardware, tokens=tokens, epochs=epochs, steps=steps)
    gpu = result.hardware.gpu is not None
    if not fit_ok(est, gpu, result.hardware):
        free = est.memory.total + est.headroom_bytes if gpu else host_ram(result.hardware)
        warnings.append(
            f"--set: the plan as overridden needs {gib(est.memory.total)} per GPU, "
            f"{result.hardware.gpu.name if gpu else 'CPU'} has {gib(free)} free ({est.verdict}); "
            f"expect out-of-memory (the fallbacks will shrink the micro-batch first)"
        )
    plan = replace(plan, decisions=decisions, warnings=warnings, estimate=estimate_section(est, steps))
    return replace(result, plan=plan, chosen=est)


def _follow_overrides(before: Plan, plan: Plan, overrides) -> dict[str, str]:
    """Values that follow an overridden one by rule, unless set too (mutates ``plan``): alpha = 2r when
    only lora.r is set; the accumulation that keeps the effective batch when only the micro-batch is."""
    derived: dict[str, str] = {}
    if "lora.r" in overrides and "lora.alpha" not in overrides and plan.lora is not None:
        plan.lora.alpha = 2 * plan.lora.r
        derived["lora.alpha"] = f"follows --set lora.r={plan.lora.r}: alpha = 2r"
    if "training.micro_batch" in overrides and "training.grad_accum" not in overrides:
        target = before.training.micro_batch * before.training.grad_accum
        plan.training.grad_accum = max(1, math.ceil(target / plan.training.micro_batch))
        derived["training.grad_accum"] = (
            f"follows --set training.micro_batch={plan.training.micro_batch}: keeps the effective batch "
            f"per GPU at ~{target}"
        )
    return derived


def override_warnings(before: Plan, after: Plan, hardware) -> list[str]:
    """Rule violations introduced by overrides, each with the numbers."""
    out: list[str] = []
    t, s = after.training, after.strategy
    lo, hi = optim.lr_range(s.method, after.task)
    if t.lr != before.training.lr and not lo <= t.lr <= hi:
        out.append(
            f"--set training.lr={t.lr:g} is outside the usual {s.method} range {lo:g}..{hi:g} "
            "(seeds/001, seeds/004)"
        )
    if s.precision == "bf16" and hardware.gpu is not None and not hardware.bf16:
        out.append(
            f"--set strategy.precision=bf16: {hardware.gpu.name} has no bf16 support (compute capability "
            f"{'.'.join(map(str, hardware.gpu.compute_capability))} < 8.0); use fp16"
        )
    if s.precision != "fp32" and hardware.gpu is None:
        out.append(f"--set strategy.precision={s.precision}: CPU training needs fp32")
    if (
        after.lora is not None
        and s.method in ADAPTER_METHODS
        and after.lora.alpha != 2 * after.lora.r
    ):
        out.append(
            f"lora.alpha={after.lora.alpha} with lora.r={after.lora.r}: scale alpha/r = "
            f"{after.lora.alpha / after.lora.r:g} (rule: alpha = 2r = {2 * after.lora.r})"
        )
    if t.seq_len < before.training.seq_len:
        out.append(
            f"--set training.seq_len={t.seq_len} is below the data's p99-based {before.training.seq_len}: "
            "more examples will be truncated"
        )
    if t.micro_batch * t.grad_accum != before.training.micro_batch * before.training.grad_accum:
        out.append(
            f"effective batch per GPU is now {t.micro_batch} x {t.grad_accum} = "
            f"{t.micro_batch * t.grad_accum} "
            f"(the rule chose {before.training.micro_batch * before.training.grad_accum})"
        )
    if s.method == "full" and before.strategy.method != "full" and after.lora is not None:
        out.append("strategy.method=full: the lora section is ignored")
    return out

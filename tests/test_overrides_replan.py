"""--set of a decision others depend on re-plans them (issue 11): the plan is made for the pinned value, so
its learning rate, weight decay, precision policy, optimizer, LoRA section, micro-batch, checkpointing and
accumulation are the rules' answers for it, unless the user set those too; each re-derived decision says so."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from planner.hardware import resolve_hardware
from planner.plan import get_path
from planner.request import PlanRequest
from planner.rules import optim
from planner.rules.engine import make_plan
from planner.rules.overrides import PINNED_KEYS
from tests.rules_helpers import FIXED_VERSIONS, make_profile


@dataclass(frozen=True)
class Case:
    id: str
    model: str
    hardware: tuple
    rows: int
    overrides: dict
    expect: dict  # dotted plan path -> value (or a callable on the value)


def _in_lr_range(method):
    lo, hi = optim.lr_range(method, "sft")
    return lambda lr: lo <= lr <= hi


CASES = [
    Case("lora->full", "meta-llama/Llama-3.1-8B", ("H100-SXM", 8), 2000, {"strategy.method": "full"},
         {"strategy.method": "full", "lora": None, "training.lr": _in_lr_range("full")}),
    Case("full->lora", "Qwen/Qwen2.5-0.5B", ("A100-80GB", 1), 50_000, {"strategy.method": "lora"},
         {"strategy.method": "lora", "lora.r": lambda r: r >= 8, "training.lr": _in_lr_range("lora"),
          "strategy.mixed_precision": False}),
    Case("->qlora", "meta-llama/Llama-3.1-8B", ("A100-80GB", 1), 2000, {"strategy.method": "qlora"},
         {"strategy.method": "qlora", "strategy.optimizer": "paged_adamw_8bit", "strategy.qlora_upcast": True,
          "training.lr": _in_lr_range("qlora")}),
    Case("->dora", "Qwen/Qwen2.5-0.5B", ("A100-80GB", 1), 2000, {"strategy.method": "dora"},
         {"strategy.method": "dora", "lora.r": lambda r: r >= 8}),
    Case("->fp32", "Qwen/Qwen2.5-0.5B", ("A100-80GB", 1), 50_000, {"strategy.precision": "fp32"},
         {"strategy.precision": "fp32", "strategy.mixed_precision": False}),
    Case("->zero3", "meta-llama/Llama-3.1-8B", ("H100-SXM", 8), 2000,
         {"strategy.method": "full", "strategy.distribution": "zero3"},
         {"strategy.distribution": "zero3", "training.lr": _in_lr_range("full")}),
    Case("full + own lr", "meta-llama/Llama-3.1-8B", ("H100-SXM", 8), 2000,
         {"strategy.method": "full", "training.lr": "3e-4"},
         {"strategy.method": "full", "training.lr": 3e-4}),
]


def _plan(case: Case):
    req = PlanRequest(model=case.model, data="train.jsonl", task="sft", goal="balanced",
                      overrides={k: str(v) for k, v in case.overrides.items()})
    return make_plan(req, hardware=resolve_hardware(*case.hardware), profile=make_profile(case.rows),
                     versions=FIXED_VERSIONS, alternatives=False).plan


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_pinned_overrides_re_derive_their_dependants(case):
    plan = _plan(case)
    for path, want in case.expect.items():
        got = get_path(plan, path)
        assert (want(got) if callable(want) else got == want), f"{case.id}: {path} = {got!r}"
    decisions = {d.field: d for d in plan.decisions}
    for key in case.overrides:
        assert decisions[key].source == "--set", key
    # every dependant the rules re-derived says which --set it followed; what the user set says so instead
    for key in set(case.overrides) & set(PINNED_KEYS):
        for field in PINNED_KEYS[key]:
            d = decisions.get(field)
            if d is None:
                continue
            if field in case.overrides:
                assert d.reason.startswith("set by --set") and "re-derived for" not in d.reason
            else:
                assert "re-derived for --set" in d.reason and f"{key}={case.overrides[key]}" in d.reason, field


def test_an_override_beside_a_pin_is_kept_and_warned_about():
    case = next(c for c in CASES if c.id == "full + own lr")
    plan = _plan(case)
    assert plan.training.lr == 3e-4 and any("outside the usual full range" in w for w in plan.warnings)


def test_without_pins_the_plan_is_unchanged():
    """A --set of a leaf value (no dependants) leaves every other decision as the rules made it."""
    base = _plan(Case("base", "Qwen/Qwen2.5-0.5B", ("A100-80GB", 1), 2000, {}, {}))
    leaf = _plan(Case("leaf", "Qwen/Qwen2.5-0.5B", ("A100-80GB", 1), 2000, {"training.seed": "7"}, {}))
    assert leaf.training.seed == 7
    assert [(d.field, d.value) for d in base.decisions if d.field != "training.seed"] == \
        [(d.field, d.value) for d in leaf.decisions if d.field != "training.seed"]

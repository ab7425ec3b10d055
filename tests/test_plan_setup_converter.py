"""``setup_from_plan`` is the one converter from a plan to the estimator's TrainSetup (issue 11, item 2):
every plan field that decides memory reaches the setup under the name the table below gives, for every
golden plan (they cover single GPU, DDP, ZeRO-3 with offload, FSDP multi-node, QLoRA, CPU, classification).
A plan field that changes memory but is missing here is a plan the estimate does not describe."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.plan import get_path, load_plan, world_size
from planner.render import launch_info
from planner.rules.engine import setup_from_plan

GOLDEN = sorted(Path(__file__).parent.joinpath("golden").glob("*/plan.yaml"))

# plan path -> TrainSetup attribute (same value), or (attribute, how the plan value reads as the setup's)
PLAN_TO_SETUP = {
    "strategy.method": "method",
    "strategy.precision": "precision",
    "strategy.mixed_precision": "mixed_precision",
    "strategy.gradient_checkpointing": "gradient_checkpointing",
    "strategy.optimizer": "optimizer",
    "strategy.attn_implementation": "attn_implementation",
    "strategy.distribution": "distribution",
    "strategy.offload_optimizer": "offload_optimizer",
    "strategy.offload_params": "offload_params",
    "strategy.num_virtual_tokens": "num_virtual_tokens",
    "strategy.qlora_upcast": "qlora_upcast",
    "strategy.double_quant": "double_quant",
    "training.seq_len": "seq_len",
    "training.micro_batch": "micro_batch",  # rows, as the plan counts them (DPO: pairs)
    "training.grad_accum": "grad_accum",
    "training.fused_loss": ("fused_loss", lambda v, p: v and not (
        p.task == "classification" and p.training.classification_mode == "head")),
    "lora.r": "lora_r",
    "lora.alpha": "lora_alpha",
    "lora.target_modules": ("lora_target_modules", lambda v, p: tuple(v)),
    "lora.modules_to_save": ("modules_to_save", lambda v, p: tuple(v)),
    "lora.adapter_dtype": "adapter_dtype",
    "lora.dropout": ("lora_dropout", lambda v, p: v if p.strategy.method in ("lora", "dora", "qlora") else 0.0),
    "model.added_tokens": ("added_tokens", lambda v, p: len(v)),
    "hardware.gpu": ("gpu_kind", lambda v, p: v or ""),
}


def _entry(field: str):
    entry = PLAN_TO_SETUP[field]
    return (entry, lambda v, p: v) if isinstance(entry, str) else entry


@pytest.mark.parametrize("path", GOLDEN, ids=[p.parent.name for p in GOLDEN])
def test_every_memory_field_of_a_plan_reaches_the_setup(path):
    plan = load_plan(path)
    setup = setup_from_plan(plan)
    for field in PLAN_TO_SETUP:
        attr, read = _entry(field)
        if field.startswith("lora.") and plan.lora is None:
            continue
        assert getattr(setup, attr) == read(get_path(plan, field), plan), f"{path.parent.name}: {field} -> {attr}"
    # one world size: what the estimate shards over is what launch.sh starts
    assert setup.gpus == world_size(plan) == launch_info(plan).processes
    assert setup.sequences_per_row == (2 if plan.task == "preference" else 1)


def test_the_table_covers_every_setup_field_a_plan_decides():
    """Fields of TrainSetup not in the table come from the task (trainer traits) or are fixed by the executor."""
    from dataclasses import fields

    from planner.memory import TrainSetup

    covered = {_entry(field)[0] for field in PLAN_TO_SETUP}
    from_task = {"reference_model", "padding_mask", "device", "gpus", "sequences_per_row"}
    assert {f.name for f in fields(TrainSetup)} - covered - from_task == set()


@pytest.mark.parametrize("gpu,count,nodes,dist,expected", [
    ("A100-80GB", 8, 2, "fsdp", 16), ("A100-80GB", 1, 1, "single", 1), (None, 2, 1, "zero2", 2),
    (None, 2, 1, "single", 1), (None, 4, 3, "ddp", 4),  # CPU: one machine, hardware.count gloo processes
])
def test_world_size_is_one_rule(gpu, count, nodes, dist, expected):
    from dataclasses import replace

    plan = load_plan(GOLDEN[0])
    plan = replace(plan, hardware=replace(plan.hardware, gpu=gpu, count=count, nodes=nodes),
                   strategy=replace(plan.strategy, distribution=dist))
    assert world_size(plan) == expected == launch_info(plan).processes == setup_from_plan(plan).gpus

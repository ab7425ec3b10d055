"""``setup_from_plan`` is the one converter from a plan to the estimator's TrainSetup (issue 11, item 2):
every plan field that decides memory reaches the setup under the name the table below gives, for every
golden plan (they cover single GPU, DDP, ZeRO-3 with offload, FSDP multi-node, QLoRA, CPU, classification).
A plan field that changes memory but is missing here is a plan the estimate does not describe."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from planner.convert import plan_values, setup_from_plan
from planner.memory import TrainSetup
from planner.plan import get_path, load_plan, plan_from_dict, plan_to_dict, world_size
from planner.render import launch_info

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


@pytest.mark.parametrize("path", GOLDEN, ids=[p.parent.name for p in GOLDEN])
def test_plan_values_read_back_the_plan(path):
    """plan -> setup -> plan values: every value the setup decides is the plan's own (one converter, both
    directions)."""
    plan = load_plan(path)
    values = plan_values(setup_from_plan(plan), lora=plan.lora is not None)
    head = plan.task == "classification" and plan.training.classification_mode == "head"
    for key, value in values.items():
        if key == "training.fused_loss" and head:
            assert value is False  # a head classifier runs model(**batch).loss whatever the plan says
            continue
        if key in ("lora.dropout", "lora.adapter_dtype", "lora.modules_to_save") and plan.strategy.method not in (
                "lora", "dora", "qlora"):
            continue  # no adapter is trained: these do not reach the setup
        assert value == get_path(plan, key), f"{path.parent.name}: {key}"


SETUPS = [  # varied setups a plan can describe
    TrainSetup(method="qlora", precision="bf16", seq_len=4096, micro_batch=3, gradient_checkpointing=True,
               optimizer="paged_adamw_8bit", lora_r=64, lora_alpha=16, lora_dropout=0.1,
               lora_target_modules=("q_proj", "v_proj"), qlora_upcast=False, double_quant=False,
               modules_to_save=("embed_tokens",), adapter_dtype="model", grad_accum=7),
    TrainSetup(method="full", precision="bf16", mixed_precision=True, distribution="zero3", offload_optimizer=True,
               offload_params=True, attn_implementation="eager", optimizer="adamw_foreach", micro_batch=2),
    TrainSetup(method="prefix", precision="fp16", num_virtual_tokens=37, fused_loss=False),
    TrainSetup(method="dora", precision="fp32", attn_implementation="flash_attention_2", lora_r=8, lora_alpha=8),
]


@pytest.mark.parametrize("setup", SETUPS, ids=[s.method for s in SETUPS])
def test_setup_round_trips_through_a_plan(setup):
    """setup -> plan values -> plan -> setup gives the setup back (task-independent fields; the traits
    come from the plan's task, the world size from its hardware)."""
    plan = load_plan(next(p for p in GOLDEN if p.parent.name == "zero3-8gpu"))  # 8 GPUs: any distribution
    data = plan_to_dict(plan)
    for key, value in plan_values(setup).items():
        section, name = key.split(".")
        data.setdefault(section, {})[name] = value
    back = setup_from_plan(plan_from_dict(data))
    traits = ("reference_model", "padding_mask", "device", "gpus", "sequences_per_row", "gpu_kind", "added_tokens")
    for f in fields(TrainSetup):
        if f.name in traits or (f.name.startswith("lora_") and setup.method not in ("lora", "dora", "qlora")):
            continue
        if f.name in ("adapter_dtype", "modules_to_save") and setup.method not in ("lora", "dora", "qlora"):
            continue
        assert getattr(back, f.name) == getattr(setup, f.name), f.name


@pytest.mark.parametrize("gpu,count,nodes,dist,expected", [
    ("A100-80GB", 8, 2, "fsdp", 16), ("A100-80GB", 1, 1, "single", 1), (None, 2, 1, "zero2", 2),
    (None, 2, 1, "single", 1), (None, 4, 3, "ddp", 12),  # CPU: hardware.count gloo processes per node
])
def test_world_size_is_one_rule(gpu, count, nodes, dist, expected):
    from dataclasses import replace

    plan = load_plan(GOLDEN[0])
    plan = replace(plan, hardware=replace(plan.hardware, gpu=gpu, count=count, nodes=nodes),
                   strategy=replace(plan.strategy, distribution=dist))
    assert world_size(plan) == expected == launch_info(plan).processes == setup_from_plan(plan).gpus
